"""The benchmark's own PostgreSQL database on the same server: schema, bulk loads, resets.

Each run creates a database of its own and drops it at the end. That keeps the benchmark's
100,000 goals and millions of enrollments away from anyone else's workers and tests on the
shared ``goalworker`` database (every worker loads every active goal of its database), and
two benchmark runs at once (``make bench`` next to the test) away from each other.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import orjson
import psycopg
import sqlalchemy as sa
from psycopg import sql

from bench.workload import BenchGoal, Enrollment
from goalworker import storage

#: Prefix of the per-run database names.
DATABASE_PREFIX = "goalworker_bench_"
#: The naive design looks enrollments up by contact; goalworker never does, so the shipped
#: schema has no such index. It exists only in the benchmark's database.
CONTACT_INDEX = (
    "CREATE INDEX IF NOT EXISTS ix_bench_enrollments_account_contact "
    "ON enrollments (account_id, contact_id) WHERE status = 'active'"
)
#: Creation time of the first goal; each next one is a microsecond younger.
GOALS_CREATED = datetime(2026, 1, 1, tzinfo=UTC)


def bench_url(database_url: str, run_id: str) -> str:
    """The SQLAlchemy URL of the run's database next to ``database_url``."""
    name = DATABASE_PREFIX + run_id
    return sa.engine.make_url(database_url).set(database=name).render_as_string(False)


def _connect(database_url: str, timeout: float = 60.0) -> psycopg.Connection:
    """Connect with retries: other people's tests may restart the server for a moment."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return psycopg.connect(storage.libpq_url(database_url), autocommit=True)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def prepare(database_url: str, run_id: str) -> str:
    """Create and migrate the run's database; return its URL."""
    with _connect(database_url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE_PREFIX + run_id)))
    url = bench_url(database_url, run_id)
    env = dict(os.environ, GOALWORKER_DATABASE_URL=url, GOALWORKER_LOG_LEVEL="WARNING")
    subprocess.run([sys.executable, "-m", "goalworker", "migrate"], env=env, check=True)
    with _connect(url) as conn:
        conn.execute(CONTACT_INDEX)
    return url


def drop(database_url: str, run_id: str) -> None:
    """Drop the run's database, closing what is still connected to it."""
    name = sql.Identifier(DATABASE_PREFIX + run_id)
    with _connect(database_url) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))


def truncate_achievements(url: str) -> None:
    with _connect(url) as conn:
        conn.execute("TRUNCATE achievements")


def count_achievements(url: str) -> int:
    with _connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM achievements").fetchone()
        return int(row[0]) if row else 0


def load_goals(url: str, goals: Iterable[BenchGoal]) -> int:
    """Insert goals with COPY; return how many."""
    n = 0
    with (
        _connect(url) as conn,
        conn.cursor() as cur,
        cur.copy(
            "COPY goals (id, account_id, workflow_id, goal_type, criteria, created_by,"
            " updated_by, created_at) FROM STDIN"
        ) as copy,
    ):
        for g in goals:
            # Staggered creation times make "the oldest goal wins" well defined.
            copy.write_row(
                (
                    g.id,
                    g.account_id,
                    g.workflow_id,
                    g.goal_type,
                    orjson.dumps(g.criteria).decode(),
                    g.created_by,
                    g.created_by,
                    GOALS_CREATED + timedelta(microseconds=n),
                )
            )
            n += 1
    return n


def set_extra_goals_active(url: str, active: bool) -> None:
    """Switch the goal-count scaling goals on or off (the worker reloads on start)."""
    with _connect(url) as conn:
        conn.execute(
            "UPDATE goals SET active = %s, version = version + 1, updated_at = now() "
            "WHERE created_by = 'bench-extra'",
            (active,),
        )


def load_enrollments(url: str, enrollments: Iterable[Enrollment], enrolled_at: datetime) -> int:
    """Copy active enrollments into the projection table as goalworker writes them."""
    n = 0
    with _connect(url) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY enrollments (enrollment_id, account_id, workflow_id, contact_id, enrolled_at,"
            " status) FROM STDIN"
        ) as copy:
            for e in enrollments:
                copy.write_row(
                    (
                        e.enrollment_id,
                        e.account_id,
                        e.workflow_id,
                        e.contact_id,
                        enrolled_at,
                        "active",
                    )
                )
                n += 1
        cur.execute("ANALYZE enrollments")
    return n


async def wait_ready(url: str, timeout: float = 60.0) -> None:
    """Return once the benchmark database answers."""
    await asyncio.to_thread(lambda: _connect(url, timeout).close())

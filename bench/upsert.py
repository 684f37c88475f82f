"""The enrollment upsert three ways, side by side in one run: client CPU and wall time per row.

``python -m bench.upsert [--rounds N] [--rows N]`` writes rounds of new enrollments through

- ``values``: SQLAlchemy's multi-row ``INSERT .. VALUES .. ON CONFLICT`` (executemany with
  RETURNING, "insertmanyvalues"), the worker's statement before;
- ``arrays``: one ``unnest`` of one array per column;
- ``json``: one JSON document of rows through ``jsonb_to_recordset``, as the worker does now
  (``goalworker.storage.ENROLLMENT_UPSERT``);

all with the same merge on conflict, interleaved so that each sees the same database, and
prints the medians per row and each one's ratio to ``json``. Its rows are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncConnection

from goalworker import storage
from goalworker.settings import Settings
from goalworker.storage import EnrollmentChange, enrollments

ACCOUNT = "bench-upsert"


def _values_statement() -> Any:
    stmt = pg.insert(enrollments)
    old, new = enrollments.c, stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[old.enrollment_id],
        set_={
            "enrolled_at": sa.func.coalesce(old.enrolled_at, new.enrolled_at),
            "exited_at": sa.func.least(old.exited_at, new.exited_at),
            "exit_reason": sa.case(
                (old.exited_at.is_(None), new.exit_reason), else_=old.exit_reason
            ),
            "status": sa.case(
                ((old.exited_at.is_(None)) & (new.exited_at.is_(None)), "active"), else_="exited"
            ),
            "updated_at": sa.func.now(),
        },
    ).returning(enrollments.c.enrollment_id)


VALUES = _values_statement()
# The worker's statement with its JSON source swapped for one array per column.
ARRAYS = sa.text(
    storage.ENROLLMENT_UPSERT.text.replace(
        """jsonb_to_recordset(CAST(:rows AS jsonb)) AS new (
        enrollment_id text, account_id text, workflow_id text, contact_id text,
        enrolled_at timestamptz, status text, exited_at timestamptz, exit_reason text)""",
        """unnest(CAST(:ids AS text[]), CAST(:accounts AS text[]), CAST(:workflows AS text[]),
        CAST(:contacts AS text[]), CAST(:enrolled AS timestamptz[]), CAST(:statuses AS text[]),
        CAST(:exited AS timestamptz[]), CAST(:reasons AS text[]))""",
    )
)


async def _values(conn: AsyncConnection, rows: list[EnrollmentChange]) -> None:
    await conn.execute(
        VALUES,
        [
            {
                "enrollment_id": c.enrollment_id,
                "account_id": c.account_id,
                "workflow_id": c.workflow_id,
                "contact_id": c.contact_id,
                "enrolled_at": c.enrolled_at,
                "status": "active",
                "exited_at": c.exited_at,
                "exit_reason": c.exit_reason,
            }
            for c in rows
        ],
    )


async def _arrays(conn: AsyncConnection, rows: list[EnrollmentChange]) -> None:
    await conn.execute(
        ARRAYS,
        {
            "ids": [c.enrollment_id for c in rows],
            "accounts": [c.account_id for c in rows],
            "workflows": [c.workflow_id for c in rows],
            "contacts": [c.contact_id for c in rows],
            "enrolled": [c.enrolled_at for c in rows],
            "statuses": ["active" for _ in rows],
            "exited": [c.exited_at for c in rows],
            "reasons": [c.exit_reason for c in rows],
        },
    )


async def _json(conn: AsyncConnection, rows: list[EnrollmentChange]) -> None:
    await conn.execute(storage.ENROLLMENT_UPSERT, {"rows": storage._enrollment_rows(rows)})


WAYS: dict[str, Callable[[AsyncConnection, list[EnrollmentChange]], Awaitable[None]]] = {
    "values": _values,
    "arrays": _arrays,
    "json": _json,
}


async def run(database_url: str, rounds: int, rows: int) -> dict[str, dict[str, float]]:
    engine = storage.make_engine(database_url, pre_ping=False)
    cpu: dict[str, list[float]] = {name: [] for name in WAYS}
    wall: dict[str, list[float]] = {name: [] for name in WAYS}
    now = datetime.now(UTC)
    try:
        for r in range(rounds):
            for name, write in WAYS.items():
                tag = uuid.uuid4().hex[:8]
                changes = [
                    EnrollmentChange(
                        f"{ACCOUNT}-{tag}-{i}", ACCOUNT, "wf", f"c{i}", now, None, None
                    )
                    for i in range(rows)
                ]
                c0, w0 = time.process_time(), time.perf_counter()
                async with engine.begin() as conn:
                    await write(conn, changes)
                if r:  # the first round warms caches and connections up
                    cpu[name].append((time.process_time() - c0) / rows * 1e6)
                    wall[name].append((time.perf_counter() - w0) / rows * 1e6)
    finally:
        async with engine.begin() as conn:
            await conn.execute(sa.delete(enrollments).where(enrollments.c.account_id == ACCOUNT))
        await engine.dispose()
    return {
        name: {
            "client_cpu_us_per_row": statistics.median(cpu[name]),
            "wall_us_per_row": statistics.median(wall[name]),
        }
        for name in WAYS
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.upsert", description=__doc__)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--rows", type=int, default=1000)
    args = parser.parse_args()
    result = asyncio.run(run(Settings().database_url, max(args.rounds, 2), args.rows))
    base = result["json"]
    print(f"{args.rows} rows per round, medians of {max(args.rounds, 2) - 1} rounds")
    print("way      client CPU us/row  wall us/row  CPU vs json  wall vs json")
    for name, r in result.items():
        print(
            f"{name:<8} {r['client_cpu_us_per_row']:17.1f} {r['wall_us_per_row']:12.1f} "
            f"{r['client_cpu_us_per_row'] / base['client_cpu_us_per_row']:12.2f} "
            f"{r['wall_us_per_row'] / base['wall_us_per_row']:13.2f}"
        )


if __name__ == "__main__":
    main()

"""PostgreSQL storage: the tables, and every query the worker runs against them.

Achievement rows double as the outbox of their exit commands: ``published_at`` stays NULL
until Kafka has acknowledged the command, so a replay or a sweep can publish it again with
the same ``command_id``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4, uuid5

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from goalworker.errors import StaleVersion
from goalworker.goals import Goal, GoalType

log = logging.getLogger(__name__)

metadata = sa.MetaData()

goals = sa.Table(
    "goals",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("account_id", sa.Text, nullable=False),
    sa.Column("workflow_id", sa.Text, nullable=False),
    sa.Column("goal_type", sa.Text, nullable=False),
    sa.Column("criteria", pg.JSONB, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column(
        "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("updated_by", sa.Text, nullable=False),
    sa.Index("ix_goals_account_workflow", "account_id", "workflow_id"),
)

achievements = sa.Table(
    "achievements",
    metadata,
    sa.Column("enrollment_id", sa.Text, primary_key=True),
    sa.Column("account_id", sa.Text, nullable=False),
    sa.Column("workflow_id", sa.Text, nullable=False),
    sa.Column("contact_id", sa.Text, nullable=False),
    sa.Column("goal_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("goal_type", sa.Text, nullable=False),
    sa.Column("achieved_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("trigger_event_id", sa.Text, nullable=False),
    sa.Column("trigger_event", pg.JSONB, nullable=False),
    sa.Column("metadata", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("command_id", pg.UUID(as_uuid=True), nullable=False, unique=True),
    sa.Column(
        "recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("published_at", sa.DateTime(timezone=True)),
    sa.Index("ix_achievements_account_workflow_time", "account_id", "workflow_id", "achieved_at"),
    sa.Index("ix_achievements_account_contact_time", "account_id", "contact_id", "achieved_at"),
    sa.Index(
        "ix_achievements_unpublished",
        "recorded_at",
        postgresql_where=sa.text("published_at IS NULL"),
    ),
)

enrollments = sa.Table(
    "enrollments",
    metadata,
    sa.Column("enrollment_id", sa.Text, primary_key=True),
    sa.Column("account_id", sa.Text, nullable=False),
    sa.Column("workflow_id", sa.Text, nullable=False),
    sa.Column("contact_id", sa.Text, nullable=False),
    sa.Column("enrolled_at", sa.DateTime(timezone=True)),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("exited_at", sa.DateTime(timezone=True)),
    sa.Column("exit_reason", sa.Text),
    sa.Column(
        "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Index(
        "ix_enrollments_account_workflow_enrolled", "account_id", "workflow_id", "enrolled_at"
    ),
)

#: Namespace of exit command ids; changing it would change every id, so it never changes.
COMMAND_NAMESPACE = UUID("6f1d3c52-8a4e-4f0b-9d7e-2b5a1c9e4f30")


def command_id_for(account_id: str, enrollment_id: str) -> UUID:
    """The exit command id of an enrollment: the same on every resend, by construction."""
    return uuid5(COMMAND_NAMESPACE, f"{account_id}\x1f{enrollment_id}")


def make_engine(database_url: str, *, pre_ping: bool = True) -> AsyncEngine:
    """An async engine with a small pool.

    ``pre_ping=False`` saves a round trip per transaction; a connection found dead then fails
    its first statement (``connection_invalidated``) and the caller retries on a fresh one.
    """
    return create_async_engine(database_url, pool_size=4, max_overflow=4, pool_pre_ping=pre_ping)


async def load_active_goals(engine: AsyncEngine) -> list[Goal]:
    """Every active goal, for the worker's cache."""
    query = sa.select(goals).where(goals.c.active)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [
        Goal(
            id=r["id"],
            account_id=r["account_id"],
            workflow_id=r["workflow_id"],
            goal_type=GoalType(r["goal_type"]),
            criteria=r["criteria"],
            version=r["version"],
            created_at=r["created_at"],
        )
        for r in rows
    ]


async def goals_fingerprint(engine: AsyncEngine) -> tuple[Any, ...]:
    """A cheap summary of the goal table that changes when a goal is added, changed or deleted."""
    query = sa.select(
        sa.func.count(),
        sa.func.coalesce(sa.func.sum(goals.c.version), 0),
        sa.func.max(goals.c.updated_at),
    )
    async with engine.connect() as conn:
        return tuple((await conn.execute(query)).one())


@dataclass(frozen=True, slots=True)
class EnrollmentChange:
    """One enrolled or exited event, as the enrollment projection records it."""

    enrollment_id: str
    account_id: str
    workflow_id: str
    contact_id: str
    enrolled_at: datetime | None
    exited_at: datetime | None
    exit_reason: str | None


def _enrollment_rows(changes: Sequence[EnrollmentChange]) -> str:
    """The changes as one JSON array of rows, for ``ENROLLMENT_UPSERT``."""
    return orjson.dumps(
        [
            {
                "enrollment_id": c.enrollment_id,
                "account_id": c.account_id,
                "workflow_id": c.workflow_id,
                "contact_id": c.contact_id,
                "enrolled_at": c.enrolled_at,
                "status": "exited" if c.exited_at else "active",
                "exited_at": c.exited_at,
                "exit_reason": c.exit_reason,
            }
            for c in changes
        ]
    ).decode()


#: The enrollment projection's upsert for a whole round of changes in one statement, its
#: rows passed as one JSON document. ``python -m bench.upsert`` (1,000-row rounds): 4 us of
#: client CPU and 29 us wall per row, against 88 us and 129 us for a multi-row VALUES
#: statement (SQLAlchemy writes it and psycopg parses and adapts it anew for every page of
#: rows) and 20 us and 43 us for one array per column.
#: The merge is order-free: the start and the exit may arrive in either order, or twice.
ENROLLMENT_UPSERT = sa.text(
    """
    INSERT INTO enrollments AS old (enrollment_id, account_id, workflow_id, contact_id,
                                    enrolled_at, status, exited_at, exit_reason)
    SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS new (
        enrollment_id text, account_id text, workflow_id text, contact_id text,
        enrolled_at timestamptz, status text, exited_at timestamptz, exit_reason text)
    ON CONFLICT (enrollment_id) DO UPDATE SET
        enrolled_at = coalesce(old.enrolled_at, excluded.enrolled_at),
        exited_at = least(old.exited_at, excluded.exited_at),
        exit_reason = CASE WHEN old.exited_at IS NULL THEN excluded.exit_reason
                           ELSE old.exit_reason END,
        status = CASE WHEN old.exited_at IS NULL AND excluded.exited_at IS NULL THEN 'active'
                      ELSE 'exited' END,
        updated_at = now()
    """
)
# Built once and run with a list of rows (executemany): SQLAlchemy compiles it once and sends
# the rows in multi-row pages ("insertmanyvalues").
ACHIEVEMENT_INSERT = (
    pg.insert(achievements)
    .on_conflict_do_nothing(index_elements=["enrollment_id"])
    .returning(achievements)
)


@dataclass(frozen=True, slots=True)
class NewAchievement:
    """An achievement the worker is about to record."""

    enrollment_id: str
    account_id: str
    workflow_id: str
    contact_id: str
    goal_id: UUID
    goal_type: str
    achieved_at: datetime
    trigger_event_id: str
    trigger_event: dict[str, Any]

    @property
    def command_id(self) -> UUID:
        return command_id_for(self.account_id, self.enrollment_id)


async def record_batch(
    engine: AsyncEngine,
    changes: Sequence[EnrollmentChange],
    candidates: Sequence[NewAchievement],
    published: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Write a batch's enrollment changes and achievements in one transaction, and mark
    ``published`` (enrollment ids of exit commands Kafka acknowledged since) published.

    Returns the achievement rows whose exit command still has to be published: the ones
    inserted now, and earlier ones for the same enrollments that were never published. An
    enrollment that already has an achievement keeps it; the candidate is dropped.
    """
    async with engine.begin() as conn:
        if published:
            await conn.execute(_mark_published(published))
        if changes:
            # One row per enrollment per statement: PostgreSQL refuses to touch a row twice.
            for chunk in _distinct_rounds(changes, key=lambda c: c.enrollment_id):
                await conn.execute(ENROLLMENT_UPSERT, {"rows": _enrollment_rows(chunk)})
        if not candidates:
            return []
        rows = [
            {
                "enrollment_id": a.enrollment_id,
                "account_id": a.account_id,
                "workflow_id": a.workflow_id,
                "contact_id": a.contact_id,
                "goal_id": a.goal_id,
                "goal_type": a.goal_type,
                "achieved_at": a.achieved_at,
                "trigger_event_id": a.trigger_event_id,
                "trigger_event": a.trigger_event,
                "command_id": a.command_id,
            }
            for a in candidates
        ]
        inserted = await conn.execute(ACHIEVEMENT_INSERT, rows)
        pending = [dict(r) for r in inserted.mappings()]
        if len(pending) == len(rows):
            return pending
        # Some enrollments had an achievement already: theirs are pending if never published.
        new = {r["enrollment_id"] for r in pending}
        earlier = [a.enrollment_id for a in candidates if a.enrollment_id not in new]
        unpublished = await conn.execute(
            sa.select(achievements).where(
                achievements.c.enrollment_id.in_(earlier), achievements.c.published_at.is_(None)
            )
        )
        return pending + [dict(r) for r in unpublished.mappings()]


async def mark_published(engine: AsyncEngine, enrollment_ids: Iterable[str]) -> None:
    """Record that Kafka acknowledged the exit commands of these enrollments."""
    ids = list(enrollment_ids)
    if not ids:
        return
    async with engine.begin() as conn:
        await conn.execute(_mark_published(ids))


def _mark_published(enrollment_ids: Sequence[str]) -> sa.Update:
    return (
        sa.update(achievements)
        .where(
            achievements.c.enrollment_id.in_(enrollment_ids),
            achievements.c.published_at.is_(None),
        )
        .values(published_at=sa.func.now())
    )


def _distinct_rounds(items: Sequence[Any], key: Any) -> list[list[Any]]:
    """Split items into rounds in which each key appears at most once, keeping their order."""
    rounds: list[list[Any]] = []
    seen: list[set[Any]] = []
    for item in items:
        k = key(item)
        for i, keys in enumerate(seen):
            if k not in keys:
                keys.add(k)
                rounds[i].append(item)
                break
        else:
            seen.append({k})
            rounds.append([item])
    return rounds


#: PostgreSQL channel on which the ``goals`` table announces every change (migration 0002).
GOALS_CHANNEL = "goalworker_goals"


def libpq_url(database_url: str) -> str:
    """The SQLAlchemy URL as a plain libpq connection string for psycopg."""
    url = sa.engine.make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


async def unpublished_achievements(
    engine: AsyncEngine, older_than_seconds: float, limit: int
) -> list[dict[str, Any]]:
    """Achievements whose exit command was recorded but not published for a while."""
    a = achievements
    query = (
        sa.select(a)
        .where(
            a.c.published_at.is_(None),
            a.c.recorded_at
            < sa.func.now() - sa.func.make_interval(0, 0, 0, 0, 0, 0, older_than_seconds),
        )
        .order_by(a.c.recorded_at)
        .limit(limit)
    )
    async with engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings()]


# -- the goals API: goal configuration, conversion statistics, achievement listings ---------
#
# Every query here takes the caller's account and filters by it: a row of another account is
# never read, counted or changed. Writes to ``goals`` fire the change notification of
# migration 0002 when their transaction commits, which is how running workers learn of them.


@asynccontextmanager
async def _snapshot(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A read-only transaction whose queries all see the same committed state."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(
            isolation_level="REPEATABLE READ", postgresql_readonly=True
        )
        async with conn.begin():
            yield conn


def _goal_key(account_id: str, workflow_id: str, goal_id: UUID) -> tuple[Any, ...]:
    return (
        goals.c.id == goal_id,
        goals.c.account_id == account_id,
        goals.c.workflow_id == workflow_id,
    )


async def create_goal(
    engine: AsyncEngine,
    *,
    account_id: str,
    workflow_id: str,
    goal_type: GoalType,
    criteria: dict[str, Any],
    active: bool,
    user_id: str,
) -> dict[str, Any]:
    """Insert a goal at version 1 and return its row."""
    stmt = (
        sa.insert(goals)
        .values(
            id=uuid4(),
            account_id=account_id,
            workflow_id=workflow_id,
            goal_type=goal_type.value,
            criteria=criteria,
            active=active,
            created_by=user_id,
            updated_by=user_id,
        )
        .returning(goals)
    )
    async with engine.begin() as conn:
        return dict((await conn.execute(stmt)).mappings().one())


async def list_goals(
    engine: AsyncEngine, account_id: str, workflow_id: str, *, offset: int, limit: int
) -> tuple[list[dict[str, Any]], int]:
    """One page of a workflow's goals, oldest first, and how many there are in all."""
    where = (goals.c.account_id == account_id, goals.c.workflow_id == workflow_id)
    page = (
        sa.select(goals)
        .where(*where)
        .order_by(goals.c.created_at, goals.c.id)
        .offset(offset)
        .limit(limit)
    )
    async with _snapshot(engine) as conn:
        total = await conn.scalar(sa.select(sa.func.count()).select_from(goals).where(*where))
        rows = (await conn.execute(page)).mappings().all()
    return [dict(r) for r in rows], int(total or 0)


async def get_goal(
    engine: AsyncEngine, account_id: str, workflow_id: str, goal_id: UUID
) -> dict[str, Any] | None:
    """The goal, or None when the account has no such goal in that workflow."""
    query = sa.select(goals).where(*_goal_key(account_id, workflow_id, goal_id))
    async with engine.connect() as conn:
        row = (await conn.execute(query)).mappings().first()
    return dict(row) if row is not None else None


async def update_goal(
    engine: AsyncEngine,
    account_id: str,
    workflow_id: str,
    goal_id: UUID,
    *,
    version: int,
    changes: dict[str, Any],
    user_id: str,
) -> dict[str, Any] | None:
    """Apply ``changes`` if the goal is still at ``version``; return the new row.

    Returns None when the account has no such goal; raises :class:`StaleVersion`, changing
    nothing, when the goal has moved past ``version``.
    """
    key = _goal_key(account_id, workflow_id, goal_id)
    async with engine.begin() as conn:
        # Checked first so that a refused change issues no UPDATE: the statement trigger
        # would otherwise wake every worker for a change that did not happen.
        current = await conn.scalar(sa.select(goals.c.version).where(*key).with_for_update())
        if current is None:
            return None
        if current != version:
            raise StaleVersion(goal_id, version, current)
        stmt = (
            sa.update(goals)
            .where(*key, goals.c.version == version)
            .values(
                **changes,
                version=goals.c.version + 1,
                updated_at=sa.func.now(),
                updated_by=user_id,
            )
            .returning(goals)
        )
        row = (await conn.execute(stmt)).mappings().one()
    return dict(row)


async def delete_goal(
    engine: AsyncEngine, account_id: str, workflow_id: str, goal_id: UUID
) -> bool:
    """Delete the goal; False when the account has no such goal. Achievements stay."""
    key = _goal_key(account_id, workflow_id, goal_id)
    async with engine.begin() as conn:
        found = await conn.scalar(sa.select(goals.c.id).where(*key).with_for_update())
        if found is None:
            return False
        await conn.execute(sa.delete(goals).where(*key))
    return True


def _conversion(reached: sa.CTE, enrolled: sa.ScalarSelect[Any]) -> list[sa.ColumnElement[Any]]:
    """Achieved count, conversion rate, and average and median seconds to goal of a group."""
    achieved = sa.func.count(reached.c.goal_id)
    seconds = reached.c.seconds
    return [
        achieved.label("achieved"),
        # NULLIF: no enrollments give no rate (NULL), not a division by zero.
        (sa.cast(achieved, sa.Float) / sa.func.nullif(enrolled, 0)).label("conversion_rate"),
        sa.cast(sa.func.avg(seconds), sa.Float).label("average_seconds_to_goal"),
        sa.cast(sa.func.percentile_cont(0.5).within_group(seconds), sa.Float).label(
            "median_seconds_to_goal"
        ),
    ]


async def goal_stats(
    engine: AsyncEngine,
    account_id: str,
    workflow_id: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    """Conversion of a workflow's enrollments to its goals, overall, per goal type and per goal.

    The enrollments counted are those that started in ``[since, until)`` (all when both are
    None); achieved counts those of them that reached a goal, time to goal runs from the
    enrollment's start to the achievement. Rates are None when nothing enrolled.
    """
    e, a, g = enrollments, achievements, goals
    in_range = [e.c.account_id == account_id, e.c.workflow_id == workflow_id]
    if since is not None:
        in_range.append(e.c.enrolled_at >= since)
    if until is not None:
        in_range.append(e.c.enrolled_at < until)
    cohort = sa.select(e.c.enrollment_id, e.c.enrolled_at).where(*in_range).cte("cohort")
    reached = (
        sa.select(
            a.c.goal_id,
            a.c.goal_type,
            sa.cast(
                sa.func.extract("epoch", a.c.achieved_at - cohort.c.enrolled_at), sa.Float
            ).label("seconds"),
        )
        .join(cohort, cohort.c.enrollment_id == a.c.enrollment_id)
        .where(a.c.account_id == account_id, a.c.workflow_id == workflow_id)
        .cte("reached")
    )
    enrolled = sa.select(sa.func.count()).select_from(cohort).scalar_subquery()
    overall = sa.select(enrolled.label("enrolled"), *_conversion(reached, enrolled)).select_from(
        reached
    )

    configured = (
        sa.select(g.c.id, g.c.goal_type, g.c.active, g.c.created_at)
        .where(g.c.account_id == account_id, g.c.workflow_id == workflow_id)
        .subquery("configured")
    )
    # Goal types and goals with nothing achieved are listed too, and deleted goals keep their
    # achievements: hence the union of the configured ones and the achieved ones.
    types = sa.union(sa.select(configured.c.goal_type), sa.select(reached.c.goal_type)).subquery(
        "types"
    )
    per_type = (
        sa.select(types.c.goal_type, *_conversion(reached, enrolled))
        .select_from(types.outerjoin(reached, reached.c.goal_type == types.c.goal_type))
        .group_by(types.c.goal_type)
        .order_by(types.c.goal_type)
    )
    ids = sa.union(sa.select(configured.c.id), sa.select(reached.c.goal_id)).subquery("ids")
    per_goal = (
        sa.select(
            ids.c.id.label("goal_id"),
            sa.func.coalesce(configured.c.goal_type, sa.func.min(reached.c.goal_type)).label(
                "goal_type"
            ),
            configured.c.active,
            configured.c.id.is_(None).label("deleted"),
            *_conversion(reached, enrolled),
        )
        .select_from(
            ids.outerjoin(configured, configured.c.id == ids.c.id).outerjoin(
                reached, reached.c.goal_id == ids.c.id
            )
        )
        .group_by(
            ids.c.id,
            configured.c.id,
            configured.c.goal_type,
            configured.c.active,
            configured.c.created_at,
        )
        .order_by(configured.c.created_at.nulls_last(), ids.c.id)
    )
    async with _snapshot(engine) as conn:
        stats = dict((await conn.execute(overall)).mappings().one())
        stats["by_goal_type"] = [dict(r) for r in (await conn.execute(per_type)).mappings()]
        stats["by_goal"] = [dict(r) for r in (await conn.execute(per_goal)).mappings()]
    return stats


async def list_achievements(
    engine: AsyncEngine,
    account_id: str,
    *,
    workflow_id: str | None = None,
    contact_id: str | None = None,
    offset: int,
    limit: int,
) -> tuple[list[dict[str, Any]], int]:
    """One page of the account's achievements in a workflow or of a contact, newest first."""
    a = achievements
    where = [a.c.account_id == account_id]
    if workflow_id is not None:
        where.append(a.c.workflow_id == workflow_id)
    if contact_id is not None:
        where.append(a.c.contact_id == contact_id)
    page = (
        sa.select(
            a.c.enrollment_id,
            a.c.workflow_id,
            a.c.contact_id,
            a.c.goal_id,
            a.c.goal_type,
            a.c.achieved_at,
            a.c.trigger_event_id,
            a.c.recorded_at,
            a.c.published_at,
        )
        .where(*where)
        .order_by(a.c.achieved_at.desc(), a.c.enrollment_id.desc())
        .offset(offset)
        .limit(limit)
    )
    async with _snapshot(engine) as conn:
        total = await conn.scalar(sa.select(sa.func.count()).select_from(a).where(*where))
        rows = (await conn.execute(page)).mappings().all()
    return [dict(r) for r in rows], int(total or 0)


async def database_answers(engine: AsyncEngine) -> None:
    """Run a trivial query; raises when PostgreSQL cannot be reached."""
    async with engine.connect() as conn:
        await conn.execute(sa.text("SELECT 1"))

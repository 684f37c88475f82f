"""The achievement outbox on the real PostgreSQL: which exit commands a batch must publish."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import sqlalchemy as sa

from goalworker import storage
from goalworker.settings import Settings

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def candidate(account: str, enrollment_id: str, event_id: str) -> storage.NewAchievement:
    return storage.NewAchievement(
        enrollment_id=enrollment_id,
        account_id=account,
        workflow_id="w1",
        contact_id="c1",
        goal_id=uuid.uuid4(),
        goal_type="tag_added",
        achieved_at=T0,
        trigger_event_id=event_id,
        trigger_event={"event_id": event_id},
    )


async def _published_at(engine, enrollment_ids):
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(
                storage.achievements.c.enrollment_id, storage.achievements.c.published_at
            ).where(storage.achievements.c.enrollment_id.in_(enrollment_ids))
        )
        return {r.enrollment_id: r.published_at for r in rows}


def test_a_batch_returns_new_and_never_published_achievements_once_and_marks_earlier_ones(
    base_settings: Settings,
):
    account = f"acct-{uuid.uuid4().hex[:8]}"
    first, second, third = (f"{account}-enr-{n}" for n in range(3))

    async def scenario():
        engine = storage.make_engine(base_settings.database_url, pre_ping=False)
        try:
            rows = await storage.record_batch(
                engine, [], [candidate(account, first, "e1"), candidate(account, second, "e2")]
            )
            assert sorted(r["enrollment_id"] for r in rows) == [first, second]
            assert {r["trigger_event_id"] for r in rows} == {"e1", "e2"}
            assert all(r["published_at"] is None and r["command_id"] for r in rows)

            # A replay of `first` (its exit never marked published) and a new `third`; `second`
            # is marked published in the same transaction.
            rows = await storage.record_batch(
                engine,
                [],
                [candidate(account, first, "e1-again"), candidate(account, third, "e3")],
                published=[second],
            )
            assert sorted(r["enrollment_id"] for r in rows) == [first, third]
            # The stored row wins: the replay's event does not replace it.
            assert {r["enrollment_id"]: r["trigger_event_id"] for r in rows}[first] == "e1"
            marks = await _published_at(engine, [first, second, third])
            assert marks[second] is not None and marks[first] is None and marks[third] is None

            await storage.mark_published(engine, [first, third])
            rows = await storage.record_batch(engine, [], [candidate(account, first, "e1-3rd")])
            assert rows == []
        finally:
            await engine.dispose()

    asyncio.run(scenario())


def test_the_enrollment_projection_merges_starts_and_exits_in_any_order(base_settings: Settings):
    account = f"acct-{uuid.uuid4().hex[:8]}"
    later = T0.replace(hour=13)

    def change(enrollment_id, enrolled_at=None, exited_at=None, reason=None):
        return storage.EnrollmentChange(
            enrollment_id, account, "w1", "c1", enrolled_at, exited_at, reason
        )

    in_order, overtaken, open_one = (f"{account}-enr-{n}" for n in range(3))

    async def scenario():
        engine = storage.make_engine(base_settings.database_url, pre_ping=False)
        try:
            # Start and exit in one batch; an exit that overtook its start; a start seen twice.
            await storage.record_batch(
                engine,
                [
                    change(in_order, enrolled_at=T0),
                    change(in_order, exited_at=later, reason="completed"),
                    change(overtaken, exited_at=later, reason="manual"),
                    change(open_one, enrolled_at=T0),
                    change(open_one, enrolled_at=T0),
                ],
                [],
            )
            await storage.record_batch(
                engine,
                [
                    change(overtaken, enrolled_at=T0),
                    # A second, later exit of the same enrollment changes nothing.
                    change(in_order, exited_at=later.replace(hour=14), reason="other"),
                ],
                [],
            )
            e = storage.enrollments
            async with engine.connect() as conn:
                rows = await conn.execute(sa.select(e).where(e.c.account_id == account))
                by_id = {r.enrollment_id: r for r in rows}
        finally:
            await engine.dispose()
        assert set(by_id) == {in_order, overtaken, open_one}
        for enrollment_id, reason in ((in_order, "completed"), (overtaken, "manual")):
            row = by_id[enrollment_id]
            assert (row.enrolled_at, row.exited_at, row.status, row.exit_reason) == (
                T0,
                later,
                "exited",
                reason,
            )
        row = by_id[open_one]
        assert (row.enrolled_at, row.exited_at, row.status) == (T0, None, "active")

    asyncio.run(scenario())

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

"""The naive design: one event at a time, asking PostgreSQL everything it needs to know.

For every event: decode and validate it (goalworker's own ``decode``, so validation costs the
same), select the contact's active enrollments that were open when it occurred, select each
such workflow's active goals of the event's type and check their criteria, then for a met
goal check for an existing achievement, insert one, publish its exit command and mark it
published. Connections come from a SQLAlchemy pool in autocommit mode without a per-checkout
ping; queries go through psycopg as prepared statements; the lookups have their indexes (the
benchmark adds one on ``enrollments (account_id, contact_id)``). Offsets are auto-committed
every second, as often as goalworker commits.

Run as ``python -m bench.naive``; prints one JSON line with the result.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from decimal import Decimal
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench import procstat
from goalworker import topics
from goalworker.errors import InvalidRecord
from goalworker.events import Event, decode
from goalworker.exits import exit_command
from goalworker.goals import GOAL_TYPE_OF_EVENT, normalize_name
from goalworker.settings import Settings
from goalworker.storage import command_id_for

ENROLLMENTS = """
    SELECT enrollment_id, workflow_id FROM enrollments
    WHERE account_id = %s AND contact_id = %s AND status = 'active'
      AND enrolled_at <= %s AND (exited_at IS NULL OR exited_at > %s)
"""
GOALS = """
    SELECT id, criteria FROM goals
    WHERE account_id = %s AND workflow_id = %s AND goal_type = %s AND active
    ORDER BY created_at, id
"""
ACHIEVED = "SELECT 1 FROM achievements WHERE enrollment_id = %s"
INSERT = """
    INSERT INTO achievements (enrollment_id, account_id, workflow_id, contact_id, goal_id,
        goal_type, achieved_at, trigger_event_id, trigger_event, command_id)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (enrollment_id) DO NOTHING
"""
MARK_PUBLISHED = "UPDATE achievements SET published_at = now() WHERE enrollment_id = %s"


def meets(goal_type: str, criteria: dict[str, Any], event: Event) -> bool:
    """The goal rules of the README, read plainly."""
    d = event.data
    match goal_type:
        case "tag_added":
            by_id = "tag_id" in criteria and criteria["tag_id"] == d["tag_id"]
            name = criteria.get("tag_name")
            return by_id or (
                name is not None and normalize_name(name) == normalize_name(d["tag_name"])
            )
        case "purchase_made":
            products = criteria.get("product_ids")
            if products and not set(products) & set(d["product_ids"]):
                return False
            if "min_amount" in criteria:
                return bool(
                    d["currency"] == criteria["currency"]
                    and d["amount"] >= Decimal(criteria["min_amount"])
                )
            return True
        case "appointment_booked":
            if "calendar_id" in criteria and criteria["calendar_id"] != d["calendar_id"]:
                return False
            status = criteria.get("status")
            return status is None or normalize_name(status) == normalize_name(d["status"])
        case "form_submitted":
            return bool(criteria["form_id"] == d["form_id"])
        case _:
            return bool(
                criteria["pipeline_id"] == d["pipeline_id"]
                and criteria["stage_id"] == d["stage_id"]
            )


class Naive:
    """The per-event consume loop and its counters."""

    def __init__(self, engine: AsyncEngine, producer: AIOKafkaProducer, settings: Settings):
        self.engine = engine
        self.producer = producer
        self.settings = settings
        self.allowed = {t: frozenset({e}) for t, e in settings.event_topics.items()}
        self.events = 0
        self.achievements = 0
        self.rejected = 0

    async def handle(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        self.events += 1
        try:
            event = decode(key, value, self.allowed[topic])
        except InvalidRecord:
            self.rejected += 1
            return
        goal_type = GOAL_TYPE_OF_EVENT[event.type].value
        async with self.engine.connect() as sa_conn:
            conn: Any = (await sa_conn.get_raw_connection()).driver_connection
            async with conn.cursor() as cur:
                await cur.execute(
                    ENROLLMENTS,
                    (event.account_id, event.contact_id, event.occurred_at, event.occurred_at),
                    prepare=True,
                )
                enrollments = await cur.fetchall()
                for enrollment_id, workflow_id in enrollments:
                    await cur.execute(
                        GOALS, (event.account_id, workflow_id, goal_type), prepare=True
                    )
                    goal = next(
                        (g for g in await cur.fetchall() if meets(goal_type, g[1], event)), None
                    )
                    if goal is None:
                        continue
                    await cur.execute(ACHIEVED, (enrollment_id,), prepare=True)
                    if await cur.fetchone() is None:
                        await self._achieve(cur, event, enrollment_id, workflow_id, goal[0])

    async def _achieve(
        self, cur: Any, event: Event, enrollment_id: str, workflow_id: str, goal_id: Any
    ) -> None:
        row = {
            "command_id": command_id_for(event.account_id, enrollment_id),
            "account_id": event.account_id,
            "workflow_id": workflow_id,
            "enrollment_id": enrollment_id,
            "contact_id": event.contact_id,
            "goal_id": goal_id,
            "goal_type": GOAL_TYPE_OF_EVENT[event.type].value,
            "achieved_at": event.occurred_at,
            "trigger_event_id": event.event_id,
        }
        trigger = orjson.dumps({"event_id": event.event_id, "type": event.type}).decode()
        await cur.execute(
            INSERT,
            (
                enrollment_id,
                event.account_id,
                workflow_id,
                event.contact_id,
                goal_id,
                row["goal_type"],
                event.occurred_at,
                event.event_id,
                trigger,
                row["command_id"],
            ),
            prepare=True,
        )
        await self.producer.send_and_wait(
            self.settings.topic_exit, exit_command(row), key=event.contact_id.encode()
        )
        await cur.execute(MARK_PUBLISHED, (enrollment_id,), prepare=True)
        self.achievements += 1


async def run(settings: Settings, group_id: str, max_seconds: float) -> dict[str, Any]:
    """Consume the event topics until their end or ``max_seconds``; return the result."""
    event_topics = list(settings.event_topics)
    total = sum((await topics.end_offsets(settings.kafka_bootstrap, event_topics)).values())
    # Autocommit: every statement stands alone, so no BEGIN and COMMIT round trips.
    engine = create_async_engine(
        settings.database_url, pool_size=4, pool_pre_ping=False, isolation_level="AUTOCOMMIT"
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    consumer = AIOKafkaConsumer(
        *event_topics,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group_id,
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        auto_commit_interval_ms=1000,
    )
    await producer.start()
    await consumer.start()
    naive = Naive(engine, producer, settings)
    first = last = 0.0
    cpu_start = time.process_time()
    try:
        while naive.events < total and (not first or last - first < max_seconds):
            batch = await consumer.getmany(timeout_ms=500, max_records=500)
            for messages in batch.values():
                for m in messages:
                    if not first:
                        first = time.monotonic()
                    await naive.handle(m.topic, m.key, m.value)
                last = time.monotonic()
    finally:
        await consumer.stop()
        await producer.stop()
        await engine.dispose()
    seconds = max(last - first, 1e-9)
    return {
        "events": naive.events,
        "of_events": total,
        "seconds": seconds,
        "events_per_s": naive.events / seconds,
        "achievements": naive.achievements,
        "rejected": naive.rejected,
        "cpu_us_per_event": (time.process_time() - cpu_start) / max(naive.events, 1) * 1e6,
        "peak_rss_bytes": procstat.peak_rss_bytes(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--group", required=True)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    # Topics, bootstrap and database come from GOALWORKER_* variables, as for the worker.
    result = asyncio.run(run(Settings(), args.group, args.max_seconds))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()

"""Hostile input in the thousands, interleaved with a valid stream: nothing crashes, nothing
bad slips through, nothing valid is lost."""

from __future__ import annotations

import asyncio
import random

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from goalworker import topics
from goalworker.exits import DLQ_OFFSET, DLQ_PARTITION, DLQ_REASON, DLQ_TOPIC

from .test_workers import SIZES

pytestmark = pytest.mark.integration

Record = tuple[str, bytes | None, bytes | None]


def _hostile(rng: random.Random, topic: str, good: dict) -> tuple[bytes | None, bytes | None]:
    """One record that breaks the contract in a way drawn at random."""
    key = good["contact_id"].encode()
    env = orjson.loads(orjson.dumps(good))
    kind = rng.randrange(14)
    if kind == 0:  # invalid JSON
        raw = orjson.dumps(env)
        return key, raw[: rng.randrange(1, len(raw))]
    if kind == 1:  # invalid UTF-8
        raw = bytearray(orjson.dumps(env))
        raw.insert(rng.randrange(len(raw)), rng.choice([0xFF, 0xC3, 0x80]))
        return key, bytes(raw)
    if kind == 2:  # a mistyped envelope field
        env[rng.choice(["event_id", "account_id", "contact_id", "data", "type"])] = rng.choice(
            [17, 3.5, None, [], {"x": 1}, True]
        )
    elif kind == 3:  # a missing field
        del env[rng.choice(["event_id", "type", "account_id", "contact_id", "occurred_at", "data"])]
    elif kind == 4:  # an extra field
        env[rng.choice(["extra", "Event_ID", "__proto__"])] = "x"
    elif kind == 5:  # a huge payload (over the size limit)
        env["data"]["pad"] = "x" * 300_000
    elif kind == 6:  # a key that is not the contact id, or none
        return rng.choice([b"someone-else", None, b""]), orjson.dumps(env)
    elif kind == 7:  # a timestamp without an offset, or no timestamp at all
        env["occurred_at"] = rng.choice(
            ["2026-03-01T10:00:00", "2026-03-01", "yesterday", 1767225600]
        )
    elif kind == 8:  # an amount as a number
        env["type"], env["data"] = (
            "payment.completed",
            {
                "payment_id": "p",
                "amount": rng.choice([10.5, 10, 1e308]),
                "currency": "USD",
                "product_ids": [],
            },
        )
    elif kind == 9:  # an unknown type
        env["type"] = rng.choice(["contact.tag.removed", "", "PAYMENT.COMPLETED"])
    elif kind == 10:  # an unknown version
        env["version"] = rng.choice([2, 0, "1", True])
    elif kind == 11:  # a tombstone, or JSON that is no object
        return key, rng.choice([None, b"[]", b"42", b'"text"', b"null"])
    elif kind == 12:  # a type the topic does not carry
        env["type"] = "workflow.enrolled"
        env["data"] = {"workflow_id": "w", "enrollment_id": "e"}
    else:  # a timestamp out of range
        env["occurred_at"] = rng.choice(["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
    return key, orjson.dumps(env)


async def _send(bootstrap: str, records: list[Record]) -> list[tuple[str, int, int]]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=2_000_000)
    await producer.start()
    try:
        futures = [await producer.send(t, v, key=k) for t, k, v in records]
        sent = await asyncio.gather(*futures)
        return [(m.topic, m.partition, m.offset) for m in sent]
    finally:
        await producer.stop()


@pytest.mark.parametrize("size", SIZES)
def test_a_hostile_mix_goes_to_the_dead_letter_topic_and_the_valid_stream_is_processed(
    fault_run, size
):
    bad_count = 10_000 if size == "long" else 2_000
    run = fault_run(contacts=1500)
    rng = random.Random(bad_count)
    worker = run.workers.start()
    run.send(run.plan.enrollment_records)
    run.wait_caught_up(120, [run.settings.topic_enrollment])

    valid = run.plan.event_records
    templates = [(t, orjson.loads(v)) for t, _, v in valid if v.startswith(b'{"event_id":"evt-')]
    hostile: list[Record] = []
    for _ in range(bad_count):
        topic, template = rng.choice(templates)
        key, bad = _hostile(rng, topic, template)
        hostile.append((topic, key, bad))
    mixed = [*valid, *hostile]
    rng.shuffle(mixed)
    # Keep the valid events in their original (time) order among themselves.
    valid_iter = iter(valid)
    hostile_ids = {id(r) for r in hostile}
    stream = [r if id(r) in hostile_ids else next(valid_iter) for r in mixed]
    sent = asyncio.run(_send(run.settings.kafka_bootstrap, stream))
    bad_positions = {sent[i] for i, r in enumerate(stream) if id(r) in hostile_ids}
    originals = {sent[i]: r for i, r in enumerate(stream)}
    run.wait_caught_up(300)

    assert worker.poll() is None, "the worker must survive hostile input"
    report = run.check()
    assert report.ok, "\n".join(report.lines())  # every valid achievement, nothing extra

    dead = asyncio.run(
        topics.read_all(run.settings.kafka_bootstrap, run.settings.topic_dead_letter)
    )
    by_origin = {
        (
            d.headers[DLQ_TOPIC].decode(),
            int(d.headers[DLQ_PARTITION]),
            int(d.headers[DLQ_OFFSET]),
        ): d
        for d in dead
    }
    # Every hostile record is dead-lettered; malformed ones of the plan may be there too.
    assert bad_positions <= set(by_origin)
    for origin in bad_positions:
        record = by_origin[origin]
        topic, key, value = originals[origin]
        assert record.value == value and record.key == (key if key != b"" else record.key)
        assert record.headers[DLQ_REASON]
    assert len(by_origin) == len(bad_positions) + run.plan.malformed

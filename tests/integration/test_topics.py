"""Reading skipped records back and finding where a group resumes, on the real broker."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from goalworker import topics
from goalworker.settings import Settings

pytestmark = pytest.mark.integration


async def _topic_with(bootstrap: str, records: int) -> str:
    name = f"test-range-{uuid.uuid4().hex[:8]}"
    await topics.create_topics(bootstrap, [name], partitions=2)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(records):
            await producer.send_and_wait(name, f"v{i}".encode(), key=b"k", partition=1)
    finally:
        await producer.stop()
    return name


def test_a_range_of_a_partition_is_read_back_in_order_and_nothing_else(base_settings: Settings):
    bootstrap = base_settings.kafka_bootstrap

    async def scenario() -> list[tuple[int, bytes]]:
        name = await _topic_with(bootstrap, 10)
        records = await topics.read_range(bootstrap, name, 1, 3, 7)
        empty = await topics.read_range(bootstrap, name, 0, 0, 0)
        assert empty == []
        return [(r.offset, r.value) for r in records]

    assert asyncio.run(scenario()) == [(o, f"v{o}".encode()) for o in range(3, 7)]


def test_a_group_resumes_at_its_commit_or_at_the_log_start(base_settings: Settings):
    bootstrap = base_settings.kafka_bootstrap
    group = f"test-starts-{uuid.uuid4().hex[:8]}"

    async def scenario() -> dict[int, int]:
        name = await _topic_with(bootstrap, 5)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            consumer.assign([TopicPartition(name, 1)])
            await consumer.commit({TopicPartition(name, 1): OffsetAndMetadata(4, "")})
        finally:
            await consumer.stop()
        starts = await topics.start_offsets(bootstrap, group, [(name, 0), (name, 1)])
        assert {t for t, _ in starts} == {name}
        return {p: o for (_, p), o in starts.items()}

    # Partition 1 resumes at its commit; partition 0 has none and starts at the log start.
    assert asyncio.run(scenario()) == {0: 0, 1: 4}


def test_the_delivery_watch_names_held_partitions_whose_records_are_not_handed_over(
    base_settings: Settings,
):
    """faust itself is stood in for (its rebalancing and recovery flags): what is checked is
    the watch's reading of the real log against what the worker was handed."""
    from types import SimpleNamespace

    from goalworker.pipeline import Processor

    bootstrap = base_settings.kafka_bootstrap

    async def scenario() -> tuple[str | None, str | None, str | None, str | None]:
        name = await _topic_with(bootstrap, 5)
        settings = base_settings.model_copy(
            update={"topic_tag_added": name, "stall_exit_seconds": 1.0}
        )
        recovery = SimpleNamespace(in_recovery=False)
        app = SimpleNamespace(rebalancing=False, tables=SimpleNamespace(recovery=recovery))
        processor = Processor(settings, app, table=None, recent=None)
        held = TopicPartition(name, 1)
        processor.offsets.assign([held, TopicPartition(name, 0)])
        processor.offsets.start(held, 0)
        processor.offsets.start(TopicPartition(name, 0), 0)
        processor.start_consuming(stream=object())
        too_soon = await processor.delivery_stalled()
        processor._waiting_since -= 5
        recovery.in_recovery = True
        recovering = await processor.delivery_stalled()  # and the clock starts anew
        recovery.in_recovery = False
        processor._waiting_since -= 5
        stalled = await processor.delivery_stalled()
        for offset in range(5):
            processor.offsets.seen(held, offset)
        caught_up = await processor.delivery_stalled()
        await processor.engine.dispose()
        return too_soon, recovering, stalled, caught_up

    too_soon, recovering, stalled, caught_up = asyncio.run(scenario())
    assert too_soon is None and recovering is None and caught_up is None
    assert stalled is not None
    assert "5 records wait on 1 held partitions" in stalled and "[1] from offset 0" in stalled

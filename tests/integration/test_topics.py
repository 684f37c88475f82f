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

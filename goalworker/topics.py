"""Kafka chores shared by the demo, the tests and operators: create topics, measure lag, read."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError


async def create_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int,
    replication_factor: int = 1,
    config: dict[str, str] | None = None,
) -> None:
    """Create each topic with ``partitions`` partitions unless it exists already."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name=n,
                num_partitions=partitions,
                replication_factor=replication_factor,
                topic_configs=config or {},
            )
            for n in dict.fromkeys(names)
            if n not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(wanted)
    finally:
        await admin.close()


async def end_offsets(bootstrap: str, topics: Iterable[str]) -> dict[TopicPartition, int]:
    """The log-end offset of every partition of ``topics``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [
            TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or ())
        ]
        if not tps:
            await consumer._client.force_metadata_update()
            tps = [
                TopicPartition(t, p)
                for t in topics
                for p in (consumer.partitions_for_topic(t) or ())
            ]
        return dict(await consumer.end_offsets(tps)) if tps else {}
    finally:
        await consumer.stop()


async def start_offsets(
    bootstrap: str, group_id: str, partitions: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """Where the group resumes each partition: its committed offset, or the log start when
    it has none (or the log no longer holds it), as ``auto_offset_reset=earliest`` does."""
    tps = [TopicPartition(t, p) for t, p in partitions]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group_id, partitions=tps)
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        log_starts = await consumer.beginning_offsets(tps)
    finally:
        await consumer.stop()
    starts = {}
    for tp in tps:
        meta = committed.get(tp)
        done = meta.offset if meta is not None and meta.offset >= 0 else 0
        starts[(tp.topic, tp.partition)] = max(done, log_starts[tp])
    return starts


#: Longest a direct read of a partition range may take before it is tried again, in seconds.
READ_RANGE_SECONDS = 30.0


async def read_range(
    bootstrap: str, topic: str, partition: int, start: int, end: int
) -> list[ConsumerRecord[bytes, bytes]]:
    """The records of one partition from offset ``start`` up to, not including, ``end``.

    Read with a consumer of its own (no group). Offsets the log no longer holds, or never
    held (transaction markers), are simply absent from the answer.
    """
    if start >= end:
        return []
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, start)
        records: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + READ_RANGE_SECONDS
        while await consumer.position(tp) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}/{partition} offsets {start} to {end - 1}")
            fetched = await consumer.getmany(tp, timeout_ms=500)
            records += [r for r in fetched.get(tp, ()) if start <= r.offset < end]
        return records
    finally:
        await consumer.stop()


async def group_lag(bootstrap: str, group_id: str, topics: Iterable[str]) -> int:
    """Records in ``topics`` that the consumer group has not committed yet."""
    ends = await end_offsets(bootstrap, topics)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group_id, partitions=list(ends))
    finally:
        await admin.close()
    lag = 0
    for tp, end in ends.items():
        meta = committed.get(tp)
        done = meta.offset if meta is not None and meta.offset >= 0 else 0
        lag += max(end - done, 0)
    return lag


async def wait_for_lag_zero(
    bootstrap: str, group_id: str, topics: list[str], timeout: float, poll: float = 0.5
) -> float:
    """Wait until the group has committed everything in ``topics``; return seconds waited."""
    start = time.monotonic()
    while True:
        try:
            if await group_lag(bootstrap, group_id, topics) == 0:
                return time.monotonic() - start
        except KafkaError as exc:
            # The group coordinator is elected lazily; until then the lag is unknown.
            if not exc.retriable:
                raise
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"group {group_id} still lags on {topics} after {timeout:.0f}s")
        await asyncio.sleep(poll)


@dataclass(frozen=True, slots=True)
class Record:
    """A record read back from a topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


async def read_all(bootstrap: str, topic: str) -> list[Record]:
    """Every record currently in ``topic``, read from the beginning to the end."""
    ends = {tp: end for tp, end in (await end_offsets(bootstrap, [topic])).items() if end > 0}
    if not ends:
        return []
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    records: list[Record] = []
    try:
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        remaining = dict(ends)
        while remaining:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for tp, messages in batch.items():
                for m in messages:
                    records.append(
                        Record(
                            m.topic, m.partition, m.offset, m.key, m.value, dict(m.headers or ())
                        )
                    )
                    if m.offset + 1 >= ends[tp]:
                        remaining.pop(tp, None)
    finally:
        await consumer.stop()
    return records

"""Kafka chores of the benchmark: run-scoped topics, bulk produce, group offsets, progress."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from bench import procstat
from goalworker import topics
from goalworker.settings import Settings

#: Records in flight while bulk producing; bounds the producer's memory.
PRODUCE_WINDOW = 20_000
#: How long committing a group's offsets is retried while an old member still holds it.
COMMIT_RETRY_SECONDS = 60.0
#: A group that made progress and then none for this long is reported as stalled, in seconds.
STALL_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class TopicSet:
    """The topics of one stream: ``<prefix>.<default name>`` for each of the worker's topics."""

    prefix: str
    #: Suffix of the enrollment topic, so several enrollment sets can share the events.
    enrollment_suffix: str = ""

    def settings(self, base: Settings, group_id: str, partitions: int) -> Settings:
        """Worker settings reading these topics in consumer group ``group_id``."""
        names = {
            name: f"{self.prefix}.{Settings.model_fields[name].default}"
            for name in Settings.model_fields
            if name.startswith("topic_")
        }
        names["topic_enrollment"] += self.enrollment_suffix
        return base.model_copy(update={**names, "group_id": group_id, "partitions": partitions})


async def create(settings: Settings) -> None:
    """Create every input and output topic of ``settings``."""
    await topics.create_topics(
        settings.kafka_bootstrap,
        [*settings.input_topics, settings.topic_exit, settings.topic_dead_letter],
        settings.partitions,
    )


async def produce(bootstrap: str, records: Iterable[tuple[str, bytes, bytes]]) -> int:
    """Send (topic, key, value) records as fast as the broker takes them; return how many."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=20,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    sent = 0
    try:
        pending: list[asyncio.Future[object]] = []
        for topic, key, value in records:
            pending.append(await producer.send(topic, value, key=key))
            sent += 1
            if len(pending) >= PRODUCE_WINDOW:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


async def set_group_offsets(
    bootstrap: str, group_id: str, topic_names: list[str], *, to_end: bool
) -> int:
    """Commit the group's offsets on ``topic_names`` at the start or the end; return records.

    The group must have no live member. Returns how many records lie between start and end.
    """
    ends = await topics.end_offsets(bootstrap, topic_names)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        starts = await consumer.beginning_offsets(list(ends))
        consumer.assign(list(ends))
        chosen = ends if to_end else starts
        offsets = {tp: OffsetAndMetadata(off, "") for tp, off in chosen.items()}
        deadline = time.monotonic() + COMMIT_RETRY_SECONDS
        while True:
            try:
                await consumer.commit(offsets)
                break
            except KafkaError:
                # A member that did not leave cleanly holds the group until its session ends.
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(1.0)
    finally:
        await consumer.stop()
    return sum(ends[tp] - starts[tp] for tp in ends)


class Stalled(Exception):
    """A consumer group made progress, then stopped committing while records remained."""


Sample = tuple[float, int, float, float]


@dataclass
class Progress:
    """Committed records of a consumer group over time, polled by :class:`GroupWatcher`.

    Each sample is (monotonic seconds, records committed, the probe's reading then, the
    machine's busy CPU seconds then).
    """

    total: int
    samples: list[Sample] = field(default_factory=list)

    def window(self) -> tuple[Sample, Sample] | None:
        """The first sample with progress and the first with everything committed.

        Commits come about once a second, so the span between two commits is exact where the
        span from the start is not. A run short enough to commit everything at once falls
        back to the last sample without progress: an upper bound on its time.
        """
        first = next((s for s in self.samples if s[1] > 0), None)
        last = next((s for s in self.samples if s[1] >= self.total), None)
        if first is None or last is None:
            return None
        if last[0] <= first[0]:
            before = [s for s in self.samples if s[1] == 0]
            if not before:
                return None
            first = before[-1]
        return first, last

    def rate(self) -> float:
        """Records per second from the first committed progress to the last record."""
        window = self.window()
        if window is None:
            return 0.0
        first, last = window
        return (last[1] - first[1]) / (last[0] - first[0])

    def probe_per_record(self) -> float:
        """How much the probe's reading grew per record over the same window."""
        window = self.window()
        if window is None:
            return 0.0
        first, last = window
        return (last[2] - first[2]) / max(last[1] - first[1], 1)

    def machine_busy_cores(self) -> float:
        """Cores the whole machine kept busy over the same window (worker, broker, database
        and all): near the core count means the run was bound by the machine."""
        window = self.window()
        if window is None:
            return 0.0
        first, last = window
        return (last[3] - first[3]) / max(last[0] - first[0], 1e-9)

    @property
    def done(self) -> bool:
        return bool(self.samples) and self.samples[-1][1] >= self.total


class GroupWatcher:
    """Polls one group's committed offsets on fixed partitions through one admin client."""

    def __init__(self, bootstrap: str, group_id: str, ends: dict[TopicPartition, int]) -> None:
        self.group_id = group_id
        self.ends = ends
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)

    async def __aenter__(self) -> GroupWatcher:
        await self._admin.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._admin.close()

    async def committed(self) -> int:
        offsets = await self._admin.list_consumer_group_offsets(
            self.group_id, partitions=list(self.ends)
        )
        done = 0
        for tp, end in self.ends.items():
            meta = offsets.get(tp)
            done += min(meta.offset, end) if meta is not None and meta.offset > 0 else 0
        return done

    async def follow(
        self,
        total: int,
        timeout: float,
        probe: Callable[[], float] = lambda: 0.0,
        check: Callable[[], None] = lambda: None,
        on_stall: Callable[[], None] = lambda: None,
        poll: float = 0.2,
    ) -> Progress:
        """Poll until ``total`` records are committed; raise TimeoutError after ``timeout``.

        ``probe`` is read with every sample (say, the worker's CPU seconds); ``check`` runs
        before every poll and may raise to give up (say, when the worker died). When the
        group has made progress and then none for ``STALL_SECONDS``, ``on_stall`` runs once
        (say, to dump the worker's stacks) and the wait goes on until ``timeout``.
        """
        progress = Progress(total)
        deadline = time.monotonic() + timeout
        last_change, last_count = time.monotonic(), 0
        while not progress.done:
            check()
            with contextlib.suppress(KafkaError):
                # The coordinator answers only once the group exists; until then, no progress.
                committed = await self.committed()
                now = time.monotonic()
                progress.samples.append((now, committed, probe(), procstat.machine_busy_seconds()))
                if committed != last_count:
                    last_change, last_count = now, committed
                elif committed and now - last_change > STALL_SECONDS:
                    on_stall()
                    raise Stalled(
                        f"group {self.group_id} stopped committing at {committed} of {total} "
                        f"records for {STALL_SECONDS:.0f}s"
                    )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"group {self.group_id} committed {progress.samples[-1][1:2]} of {total} "
                    f"records after {timeout:.0f}s"
                )
            await asyncio.sleep(poll)
        return progress


async def delete_topics(bootstrap: str, prefix: str) -> list[str]:
    """Delete every topic whose name starts with ``prefix``; return their names."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = sorted(t for t in await admin.list_topics() if t.startswith(prefix))
        # A few at a time: one request for hundreds of partitions can time out on a busy broker.
        for i in range(0, len(names), 10):
            await admin.delete_topics(names[i : i + 10], timeout_ms=30_000)
        return names
    finally:
        await admin.close()

"""Produce-to-exit latency: events at a steady rate, exit commands timed as they appear.

The producer remembers when it handed each achieving event to Kafka, by event id; a consumer
of ``workflow.exit`` joins every exit command to that time through its ``trigger_event_id``.
Both run in this process on one monotonic clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.workload import EventStream
from goalworker import topics
from goalworker.settings import Settings

#: The producer wakes this often and sends what the rate asks for by then, in seconds.
TICK_SECONDS = 0.005
#: Exit commands still missing this long after the last send are given up, in seconds.
DRAIN_SECONDS = 30.0
#: Each run first sends at its rate this long untimed, so that first-use costs (metadata
#: look-ups, connections, cold caches) are not timed as latency, in seconds.
WARMUP_SECONDS = 2.0


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between ranks."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


async def measure(
    settings: Settings, stream: EventStream, rate: float, seconds: float
) -> dict[str, Any]:
    """Send ``rate`` events per second for ``seconds`` (after an untimed warm-up); return
    latency percentiles in ms."""
    topic_of = settings.topic_of_event_type
    sent_at: dict[str, float] = {}
    latency: dict[str, float] = {}
    exits = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await exits.start()
    await producer.start()
    # This process holds the whole generated workload by now: keep it out of the cycle
    # collector's passes while timing, or their pauses would be counted as the worker's.
    gc.collect()
    gc.freeze()
    try:
        ends = await topics.end_offsets(settings.kafka_bootstrap, [settings.topic_exit])
        exits.assign(list(ends))
        for tp, end in ends.items():
            exits.seek(tp, end)
        reader = asyncio.create_task(_read_exits(exits, sent_at, latency))
        await _send_paced(producer, stream, topic_of, {}, rate, WARMUP_SECONDS)
        count, elapsed = await _send_paced(producer, stream, topic_of, sent_at, rate, seconds)
        deadline = time.monotonic() + DRAIN_SECONDS
        while len(latency) < len(sent_at) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    finally:
        gc.unfreeze()
        await producer.stop()
        await exits.stop()
    latencies = list(latency.values())
    return {
        "target_rate": rate,
        "rate": count / elapsed,
        "events": count,
        "samples": len(latencies),
        "missing": len(sent_at) - len(latencies),
        "p50_ms": percentile(latencies, 50) * 1000,
        "p95_ms": percentile(latencies, 95) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": max(latencies, default=0.0) * 1000,
    }


async def _send_paced(
    producer: AIOKafkaProducer,
    stream: EventStream,
    topic_of: dict[str, str],
    sent_at: dict[str, float],
    rate: float,
    seconds: float,
) -> tuple[int, float]:
    """Send at ``rate`` for ``seconds``; return (events sent, seconds taken)."""
    started = time.monotonic()
    count = 0
    pending = []
    while (now := time.monotonic()) - started < seconds:
        due = int((now - started) * rate)
        while count < due:
            event_type, key, value, achieving_id = stream.next(live=True)
            if achieving_id is not None:
                sent_at[achieving_id] = time.monotonic()
            pending.append(await producer.send(topic_of[event_type], value, key=key))
            count += 1
        if len(pending) > 10_000:
            await asyncio.gather(*pending)
            pending.clear()
        await asyncio.sleep(TICK_SECONDS)
    elapsed = time.monotonic() - started
    await asyncio.gather(*pending)
    return count, elapsed


async def _read_exits(
    consumer: AIOKafkaConsumer, sent_at: dict[str, float], latency: dict[str, float]
) -> None:
    """Time each exit command's first appearance against its trigger event's send."""
    while True:
        batch = await consumer.getmany(timeout_ms=100)
        arrived = time.monotonic()
        for messages in batch.values():
            for m in messages:
                trigger = orjson.loads(m.value)["trigger_event_id"]
                if trigger in sent_at and trigger not in latency:
                    latency[trigger] = arrived - sent_at[trigger]

"""The ceiling: a bare aiokafka consumer that reads the event topics and does nothing else.

``--decode json`` parses every value with orjson, as goalworker must; ``--decode none`` only
touches the bytes. Run as ``python -m bench.ceiling``; prints one JSON line with the result.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from bench import procstat
from goalworker import topics

#: Records asked for per fetch round; large rounds are what makes a Python consumer fast.
MAX_RECORDS = 10_000


async def consume(
    bootstrap: str, group_id: str, topic_names: list[str], decode: bool, timeout: float
) -> dict[str, Any]:
    """Read every record now in ``topic_names`` once; return counts and timings."""
    ends = await topics.end_offsets(bootstrap, topic_names)
    total = sum(ends.values())
    consumer = AIOKafkaConsumer(
        *topic_names,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    # start() returns once the group has assigned the partitions, which is also when the
    # background fetcher begins: the clock starts here.
    first = time.monotonic()
    last = first
    seen = 0
    size = 0
    cpu_start = time.process_time()
    deadline = time.monotonic() + timeout
    try:
        while seen < total:
            if time.monotonic() > deadline:
                raise TimeoutError(f"read {seen} of {total} records in {timeout:.0f}s")
            batch = await consumer.getmany(timeout_ms=500, max_records=MAX_RECORDS)
            if not batch:
                continue
            for messages in batch.values():
                if decode:
                    for m in messages:
                        orjson.loads(m.value)
                else:
                    for m in messages:
                        size += len(m.value)
                seen += len(messages)
            last = time.monotonic()
        await consumer.commit()
    finally:
        await consumer.stop()
    seconds = max(last - first, 1e-9)
    return {
        "events": seen,
        "seconds": seconds,
        "events_per_s": seen / seconds,
        "cpu_us_per_event": (time.process_time() - cpu_start) / max(seen, 1) * 1e6,
        "peak_rss_bytes": procstat.peak_rss_bytes(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--topics", required=True, help="comma separated")
    parser.add_argument("--decode", choices=("json", "none"), default="json")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    result = asyncio.run(
        consume(
            args.bootstrap,
            args.group,
            args.topics.split(","),
            args.decode == "json",
            args.timeout,
        )
    )
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()

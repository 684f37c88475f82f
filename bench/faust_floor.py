"""The faust floor: a faust agent that reads the event topics, decodes JSON and acks, no more.

goalworker runs on faust, so this is the fastest goalworker could be with faust's per-event
stream, acks and offset commits and none of its own work. It sits between the bare aiokafka
ceiling and goalworker and says which part of the gap is faust's. The agent uses the same
settings goalworker does (no-ack stream, acks after the work, one commit a second).

Run as ``python -m bench.faust_floor``; prints one JSON line with the result.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from typing import Any

import faust
import orjson

from bench import procstat
from goalworker import topics


def build(bootstrap: str, group_id: str, topic_names: list[str], total: int) -> faust.App:
    app = faust.App(
        group_id,
        broker=[f"kafka://{bootstrap}"],
        store="memory://",
        web_enabled=False,
        autodiscover=False,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,
        broker_commit_interval=1.0,
        table_standby_replicas=0,
    )
    inputs = app.topic(*topic_names, key_serializer="raw", value_serializer="raw")
    result: dict[str, Any] = {}

    @app.agent(inputs)
    async def consume(stream: Any) -> None:
        stream = stream.noack()
        seen = 0
        first = 0.0
        cpu_start = 0.0
        async for event in stream.events():
            if not first:
                first, cpu_start = time.monotonic(), time.process_time()
            orjson.loads(event.message.value)
            await stream.ack(event)
            seen += 1
            if seen >= total:
                seconds = max(time.monotonic() - first, 1e-9)
                result.update(
                    events=seen,
                    seconds=seconds,
                    events_per_s=seen / seconds,
                    cpu_us_per_event=(time.process_time() - cpu_start) / seen * 1e6,
                    peak_rss_bytes=procstat.peak_rss_bytes(),
                )
                # faust's worker redirects sys.stdout into its log: write to the real one, then
                # leave at once (nothing of this throwaway group needs a clean shutdown).
                os.write(1, orjson.dumps(result) + b"\n")
                os._exit(0)

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--topics", required=True, help="comma separated")
    parser.add_argument(
        "--loop", choices=("asyncio", "uvloop"), default="uvloop", help="as goalworker's default"
    )
    args = parser.parse_args(argv)
    if args.loop == "uvloop":
        import mode.loop

        mode.loop.use("uvloop")
    names = args.topics.split(",")
    total = sum(asyncio.run(topics.end_offsets(args.bootstrap, names)).values())
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    app = build(args.bootstrap, args.group, names, total)
    worker = faust.Worker(app, loglevel="WARNING", quiet=True, stdout=sys.stderr)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()

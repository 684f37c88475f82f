"""Profile goalworker's hot path with py-spy on the quick stream.

``python -m bench.profile`` builds the quick-size stream (more events, so the recording sees
only steady consumption), loads the worker's enrollment state, starts a worker, waits for its
first commit, then records it with py-spy (``--phase enrollments``: a worker loading a large
enrollment topic instead): folded stacks (``profile.txt``) and a flame graph
(``profile.svg``) in ``bench/out/``. It prints the share of CPU samples per component and, by
the worker's measured CPU time per event, the microseconds each costs per event.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench import kafka
from bench.runner import Bench, say
from bench.sizes import QUICK
from goalworker import topics

DEFAULT_OUT = Path(__file__).resolve().parent / "out"

#: Components of the consume path, matched in order against each sampled stack (innermost
#: frame first). The first component whose marker appears in a frame takes the sample.
COMPONENTS = [
    ("JSON decode (orjson)", ("orjson",)),
    ("validation (events._envelope, _data, checks)", ("goalworker/events.py",)),
    ("matching (goalworker/matching.py)", ("goalworker/matching.py",)),
    ("enrollment spans (goalworker/enrollments.py)", ("goalworker/enrollments.py",)),
    ("recent-events buffer", ("goalworker/recent_events.py",)),
    ("PostgreSQL writes (SQLAlchemy, psycopg)", ("sqlalchemy/", "psycopg/", "storage.py")),
    ("exit commands (exits.py)", ("goalworker/exits.py",)),
    ("faust table get/set and changelog", ("faust/tables/", "faust/stores/")),
    ("faust stream, event and ack machinery", ("faust/streams.py", "faust/events.py")),
    ("faust conductor, channels, consumer", ("faust/transport/", "faust/channels.py")),
    ("faust other", ("faust/",)),
    ("aiokafka fetch and produce", ("aiokafka/",)),
    ("goalworker app (accept, batch, flush)", ("goalworker/app.py",)),
    ("mode (services, timers, queues)", ("mode/",)),
    ("asyncio event loop", ("asyncio/",)),
]


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    return found


def component_of(stack: str) -> str:
    """The component one folded stack belongs to, judged from its innermost frames."""
    frames = stack.split(";")[::-1]
    for frame in frames:
        for name, markers in COMPONENTS:
            if any(m in frame for m in markers):
                return name
    return "other"


def summarize(folded: Path, cpu_us_per_event: float, top: int = 25) -> str:
    """Shares of samples per component and per innermost goalworker function, as text."""
    by_component: Counter[str] = Counter()
    by_own_function: Counter[str] = Counter()
    by_leaf: Counter[str] = Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        by_component[component_of(stack)] += n
        frames = stack.split(";")
        by_leaf[frames[-1]] += n
        own = next((f for f in reversed(frames) if "goalworker/" in f), None)
        if own is not None:
            by_own_function[own] += n
    lines = [f"{total} samples; worker CPU {cpu_us_per_event:.1f} us per event", ""]
    lines.append("share  us/event  component")
    for name, n in by_component.most_common():
        lines.append(f"{n / total:5.1%}  {n / total * cpu_us_per_event:8.1f}  {name}")
    lines += ["", "share  innermost goalworker frame of the sample (inclusive of callees)"]
    for name, n in by_own_function.most_common(top):
        lines.append(f"{n / total:5.1%}  {name}")
    lines += ["", "share  innermost frame (self time)"]
    for name, n in by_leaf.most_common(top):
        lines.append(f"{n / total:5.1%}  {name}")
    return "\n".join(lines) + "\n"


async def profile(out: Path, events: int, seconds: float, phase: str) -> None:
    """Record a worker consuming the event stream (``phase="events"``, its state loaded
    first) or loading its enrollment state from the enrollment topic (``"enrollments"``)."""
    if phase == "enrollments":
        contacts = max(QUICK.contacts, events)
        size = dataclasses.replace(
            QUICK, enrollments=events, contacts=contacts, events=1_000, runs=1
        )
    else:
        size = dataclasses.replace(QUICK, events=events, runs=1)
    bench = Bench(size, out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        await bench._setup()
        settings = bench.main
        bootstrap, group = settings.kafka_bootstrap, settings.group_id
        if phase == "enrollments":
            read = [settings.topic_enrollment]
            await kafka.set_group_offsets(
                bootstrap, group, list(settings.event_topics), to_end=True
            )
        else:
            await bench._load_state(settings, "profile-load")
            read = list(settings.event_topics)
            await kafka.set_group_offsets(bootstrap, group, read, to_end=False)
        ends = await topics.end_offsets(bootstrap, read)
        total = sum(ends.values())
        worker = bench._start(settings, "profile-worker.log")
        async with kafka.GroupWatcher(bootstrap, group, ends) as watcher:
            while await watcher.committed() == 0:
                worker.check_alive()
                await asyncio.sleep(0.2)
            say(f"worker {worker.pid} is consuming; recording {seconds:.0f}s with py-spy")
            cpu0, done0 = worker.cpu_seconds(), await watcher.committed()
            folded, svg = out / "profile.txt", out / "profile.svg"
            base = [py_spy(), "record", "--pid", str(worker.pid), "--rate", "200"]
            half = str(max(int(seconds / 2), 1))
            await asyncio.to_thread(
                subprocess.run,
                [*base, "--format", "raw", "--duration", half, "-o", str(folded)],
                check=True,
                capture_output=True,
            )
            await asyncio.to_thread(
                subprocess.run,
                [*base, "--format", "flamegraph", "--duration", half, "-o", str(svg)],
                check=True,
                capture_output=True,
            )
            cpu1, done1 = worker.cpu_seconds(), await watcher.committed()
        if done1 >= total:
            say("WARNING the worker finished during the recording; raise --events")
        cpu_us = (cpu1 - cpu0) / max(done1 - done0, 1) * 1e6
        text = summarize(folded, cpu_us)
        (out / "profile-summary.txt").write_text(text)
        print(text)
        say(f"{done1 - done0} records in the recording; files in {out}/")
    finally:
        for w in bench._workers:
            w.stop()
        await bench._cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--phase",
        choices=("events", "enrollments"),
        default="events",
        help="record the event stream, or the loading of the enrollment state",
    )
    parser.add_argument("--events", type=int, default=300_000, help="records of the phase's stream")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    asyncio.run(profile(args.out, args.events, args.seconds, args.phase))


if __name__ == "__main__":
    main()

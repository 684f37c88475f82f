"""One benchmark run: build the stream once, measure every variant in turn, repeat, report.

Steps:

1. Create the run's own database; insert the ten goals the stream meets and
   the goal-count scaling goals (inactive); copy the enrollments into PostgreSQL.
2. Produce the enrollments and the event stream into run-scoped topics.
3. Load goalworker's enrollment state once: a worker reads the enrollment topic while its
   group's event offsets are committed at the end, then stops. Its state stays in the
   changelog topic, which every later start of the same group reads back.
4. Repeat ``runs`` times, every variant reading the same event topics from the start: the
   two ceilings, the faust floor, goalworker with 10 goals, with 100,000 goals, with two
   processes, and the naive design. goalworker runs rewind the group's event offsets and
   start fresh processes.
5. Enrollment-state scaling: a second enrollment topic with the large state, its own group.
6. Latency: fresh topics, a worker with its state loaded, paced events, timed exit commands.
7. Delete the run's topics and drop its database.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import database, kafka, latency, procstat, report
from bench.kafka import GroupWatcher, TopicSet
from bench.sizes import Size
from bench.worker import WorkerProcess
from bench.workload import WORKFLOWS, EventStream, World
from goalworker import topics
from goalworker.demo import settings_env
from goalworker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
#: Latency runs send at most this many events per second, whatever half the maximum is.
LATENCY_RATE_CAP = 20_000
#: Fewest achieving events one latency run should time; the share is raised to reach it.
LATENCY_MIN_SAMPLES = 20
#: Tries per measured run: a stalled group or a shared service going away makes it try again.
ATTEMPTS = 3
#: The parts of a run, in order; ``--only`` picks some of them.
PHASES = ("throughput", "state", "latency")
#: Worker log lines that mean PostgreSQL or Kafka went away during a run (other people's
#: fault tests stop the shared services now and then).
DISTURBANCES = ("will retry", "lost its connection", "Connection refused")


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


class Bench:
    """The state of one run: its sizes, topics, groups, workers and collected figures."""

    def __init__(
        self,
        size: Size,
        out: Path,
        *,
        keep_topics: bool = False,
        phases: frozenset[str] = frozenset(PHASES),
    ) -> None:
        self.size = size
        self.phases = phases
        self.out = out
        self.logs = out / "logs"
        self.keep_topics = keep_topics
        self.run_id = uuid.uuid4().hex[:8]
        self.prefix = f"bench-{self.run_id}"
        self.base = Settings()
        self.db_url = ""
        self.world = World(self.run_id, size.contacts, size.enrollments)
        self.runs: dict[str, list[dict[str, Any]]] = {}
        #: Enrollment-state loads: how long goalworker took to read the enrollment topic.
        self.loads: dict[str, Any] = {}
        #: Runs that had to be repeated, and why.
        self.incidents: list[dict[str, str]] = []
        self.expected_achievements = 0
        self._workers: list[WorkerProcess] = []

    # -- settings of the three streams -----------------------------------------------------

    def _settings(self, topic_set: TopicSet, group: str) -> Settings:
        base = self.base.model_copy(update={"database_url": self.db_url})
        return topic_set.settings(base, f"{self.prefix}-{group}", self.size.partitions)

    @property
    def main(self) -> Settings:
        return self._settings(TopicSet(f"{self.prefix}.main"), "gw")

    @property
    def large(self) -> Settings:
        return self._settings(TopicSet(f"{self.prefix}.main", ".large"), "gwlarge")

    @property
    def lat(self) -> Settings:
        return self._settings(TopicSet(f"{self.prefix}.lat"), "gwlat")

    # -- the whole run -----------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        started, load_start = datetime.now(UTC), procstat.load_average()
        say(
            f"run {self.run_id}, size {self.size.name}: {os.cpu_count()} cores, "
            f"load average {load_start}"
        )
        try:
            await self._setup()
            if "throughput" in self.phases:
                self.loads["main"] = await self._load_state(self.main, "gw-load")
                for i in range(self.size.runs):
                    say(f"repetition {i + 1} of {self.size.runs}")
                    await self._repetition(i)
            if "state" in self.phases:
                await self._large_state()
            if "latency" in self.phases:
                await self._latency()
        finally:
            for worker in self._workers:
                worker.stop()
            await self._cleanup()
        results = self._results(started, load_start)
        report.write(results, self.out)
        say(f"load average now {procstat.load_average()}; report in {self.out}/")
        return results

    async def _setup(self) -> None:
        size, world = self.size, self.world
        self.db_url = await asyncio.to_thread(database.prepare, self.base.database_url, self.run_id)
        goals = [*world.goals(), *world.extra_goals(size.extra_goals)]
        await asyncio.to_thread(database.load_goals, self.db_url, goals)
        await asyncio.to_thread(database.set_extra_goals_active, self.db_url, False)
        await asyncio.to_thread(
            database.load_enrollments, self.db_url, world.enrollments(), world.enrolled_at
        )
        for settings in (self.main, self.large, self.lat):
            await kafka.create(settings)
        main = self.main
        began = time.monotonic()
        await kafka.produce(
            main.kafka_bootstrap,
            ((main.topic_enrollment, *world.enrollment_record(e)) for e in world.enrollments()),
        )
        stream = EventStream(world, f"e-{self.run_id}", seed=11)
        await kafka.produce(main.kafka_bootstrap, self._events(main, stream, size.events))
        self.expected_achievements = stream.achieving
        say(
            f"produced {size.enrollments} enrollments and {size.events} events "
            f"({stream.achieving} achieving) in {time.monotonic() - began:.1f}s; "
            f"{len(goals)} goals in the database"
        )

    @staticmethod
    def _events(
        settings: Settings, stream: EventStream, count: int
    ) -> Iterator[tuple[str, bytes, bytes]]:
        topic_of = settings.topic_of_event_type
        for _ in range(count):
            event_type, key, value, _achieving = stream.next()
            yield topic_of[event_type], key, value

    async def _repetition(self, i: int) -> None:
        main = self.main
        for decode in ("none", "json"):
            result = await self._module(
                "bench.ceiling",
                f"{self.prefix}-ceiling-{decode}-{i}",
                "--bootstrap",
                main.kafka_bootstrap,
                "--topics",
                ",".join(main.event_topics),
                "--decode",
                decode,
                "--timeout",
                str(self.size.timeout_seconds),
                env=os.environ,
            )
            self._record(f"ceiling_{'bytes' if decode == 'none' else 'json'}", result)
        result = await self._module(
            "bench.faust_floor",
            f"{self.prefix}-faust-floor-{i}",
            "--bootstrap",
            main.kafka_bootstrap,
            "--topics",
            ",".join(main.event_topics),
            env=settings_env(main),
        )
        self._record("faust_floor", result)
        self._record("goalworker", await self._goalworker(main, 1, f"gw-{i}"))
        await asyncio.to_thread(database.set_extra_goals_active, self.db_url, True)
        try:
            self._record("goalworker_100k_goals", await self._goalworker(main, 1, f"gwx-{i}"))
        finally:
            await asyncio.to_thread(database.set_extra_goals_active, self.db_url, False)
        self._record("goalworker_two_processes", await self._goalworker(main, 2, f"gw2-{i}"))
        await asyncio.to_thread(database.truncate_achievements, self.db_url)
        result = await self._module(
            "bench.naive",
            f"{self.prefix}-naive-{i}",
            "--max-seconds",
            str(self.size.naive_max_seconds),
            env=settings_env(main),
        )
        self._record("naive", result)

    def _record(self, variant: str, result: dict[str, Any]) -> None:
        self.runs.setdefault(variant, []).append(result)
        rss = result.get("peak_rss_bytes", 0) / 2**20
        say(
            f"  {variant:<26} {result['events_per_s']:>10,.0f} events/s  "
            f"{result.get('cpu_us_per_event', 0):6.1f} CPU us/event  peak RSS {rss:,.0f} MiB"
        )

    # -- goalworker runs ------------------------------------------------------------------

    async def _load_state(self, settings: Settings, label: str) -> dict[str, Any]:
        """Let a worker read the enrollment topic only; stop it once committed."""
        bootstrap, group = settings.kafka_bootstrap, settings.group_id
        await kafka.set_group_offsets(bootstrap, group, list(settings.event_topics), to_end=True)
        ends = await topics.end_offsets(bootstrap, [settings.topic_enrollment])
        worker = self._start(settings, f"{label}.log")
        began = time.monotonic()
        try:
            async with GroupWatcher(bootstrap, group, ends) as watcher:
                progress = await watcher.follow(
                    sum(ends.values()), self.size.timeout_seconds, check=worker.check_alive
                )
            result = {
                "enrollments": sum(ends.values()),
                "seconds": time.monotonic() - began,
                "enrollments_per_s": progress.rate(),
                "peak_rss_bytes": worker.peak_rss_bytes(),
            }
        except kafka.Stalled:
            worker.dump_stacks()
            raise
        finally:
            worker.stop()
        say(
            f"  {label}: {result['enrollments']} enrollments loaded in "
            f"{result['seconds']:.1f}s ({result['enrollments_per_s']:,.0f}/s)"
        )
        return result

    async def _goalworker(self, settings: Settings, processes: int, label: str) -> dict[str, Any]:
        """One measured goalworker run, tried again after a stall or a service outage."""
        for attempt in range(1, ATTEMPTS + 1):
            name = label if attempt == 1 else f"{label}-try{attempt}"
            try:
                result = await self._goalworker_once(settings, processes, name)
            except kafka.Stalled as exc:
                # A service outage explains a pause; without one, the worker itself stalled.
                logs = self.logs.glob(f"{self.run_id}-{name}-*.log")
                outage = any(
                    any(d in p.read_text(errors="replace") for d in DISTURBANCES) for p in logs
                )
                self._incident(name, "outage" if outage else "stall", str(exc))
                continue
            if result["disturbed"] and attempt < ATTEMPTS:
                self._incident(name, "disturbed", "PostgreSQL or Kafka went away during the run")
                continue
            result["attempts"] = attempt
            return result
        raise RuntimeError(f"{label}: no complete run in {ATTEMPTS} attempts; see the logs")

    async def _goalworker_once(
        self, settings: Settings, processes: int, label: str
    ) -> dict[str, Any]:
        """Rewind the group's event offsets, start ``processes`` workers, time the catch-up."""
        bootstrap, group = settings.kafka_bootstrap, settings.group_id
        event_topics = list(settings.event_topics)
        await asyncio.to_thread(database.truncate_achievements, self.db_url)
        total = await kafka.set_group_offsets(bootstrap, group, event_topics, to_end=False)
        ends = await topics.end_offsets(bootstrap, event_topics)
        workers = [self._start(settings, f"{label}-{k}.log") for k in range(processes)]

        def check() -> None:
            for w in workers:
                w.check_alive()

        def dump() -> None:
            for w in workers:
                w.dump_stacks()

        try:
            async with GroupWatcher(bootstrap, group, ends) as watcher:
                progress = await watcher.follow(
                    total,
                    self.size.timeout_seconds,
                    probe=lambda: sum(w.cpu_seconds() for w in workers),
                    check=check,
                    on_stall=dump,
                )
            peaks = [w.peak_rss_bytes() for w in workers]
        finally:
            for w in workers:
                w.stop()
        achievements = await asyncio.to_thread(database.count_achievements, self.db_url)
        if achievements != self.expected_achievements:
            say(
                f"  WARNING {label}: {achievements} achievements, expected "
                f"{self.expected_achievements}"
            )
        rate = progress.rate()
        return {
            "events": total,
            "processes": processes,
            "events_per_s": rate,
            "events_per_s_per_process": rate / processes,
            "cpu_us_per_event": progress.probe_per_record() * 1e6,
            "machine_busy_cores": progress.machine_busy_cores(),
            "peak_rss_bytes": max(peaks),
            "achievements": achievements,
            "expected_achievements": self.expected_achievements,
            "disturbed": any(w.log_mentions(*DISTURBANCES) for w in workers),
        }

    def _incident(self, run: str, kind: str, detail: str) -> None:
        """Note a run that had to be repeated; the report lists them."""
        say(f"  {run}: {kind}: {detail}; trying again")
        self.incidents.append({"run": run, "kind": kind, "detail": detail})

    def _start(self, settings: Settings, log_name: str) -> WorkerProcess:
        worker = WorkerProcess(settings, self.logs / f"{self.run_id}-{log_name}").start()
        self._workers.append(worker)
        return worker

    async def _large_state(self) -> None:
        """Enrollment-state scaling: the same events, a larger enrollment topic and group."""
        large, world, size = self.large, self.world, self.size
        began = time.monotonic()
        await kafka.produce(
            large.kafka_bootstrap,
            (
                (large.topic_enrollment, *world.enrollment_record(e))
                for e in world.enrollments(size.large_enrollments)
            ),
        )
        say(f"produced {size.large_enrollments} enrollments in {time.monotonic() - began:.1f}s")
        self.loads["large"] = await self._load_state(large, "gwlarge-load")
        for i in range(size.runs):
            self._record("goalworker_large_state", await self._goalworker(large, 1, f"gwl-{i}"))

    # -- latency ----------------------------------------------------------------------------

    async def _latency(self) -> None:
        lat, world, size = self.lat, self.world, self.size
        await kafka.produce(
            lat.kafka_bootstrap,
            ((lat.topic_enrollment, *world.enrollment_record(e)) for e in world.enrollments()),
        )
        await asyncio.to_thread(database.truncate_achievements, self.db_url)
        worker = self._start(lat, "gwlat.log")
        try:
            ends = await topics.end_offsets(lat.kafka_bootstrap, [lat.topic_enrollment])
            async with GroupWatcher(lat.kafka_bootstrap, lat.group_id, ends) as watcher:
                await watcher.follow(
                    sum(ends.values()), size.timeout_seconds, check=worker.check_alive
                )
            steps = {"steady": float(size.latency_rate)}
            max_rate = median([r["events_per_s"] for r in self.runs.get("goalworker", [])])
            if max_rate:
                steps["half_max"] = round(min(max(max_rate / 2, 1.0), LATENCY_RATE_CAP))
            else:
                say("  no measured maximum (throughput phase not run): steady rate only")
            events = (
                sum(steps.values()) * (size.latency_seconds + latency.WARMUP_SECONDS) * size.runs
            )
            # Every achieving event needs an enrollment not achieved yet.
            share = min(
                max(0.01, LATENCY_MIN_SAMPLES / (min(steps.values()) * size.latency_seconds)),
                0.5 * size.enrollments / events,
            )
            stream = EventStream(world, f"l-{self.run_id}", seed=23, achieving_share=share)
            for step, rate in steps.items():
                for i in range(size.runs):
                    result = await latency.measure(lat, stream, rate, size.latency_seconds)
                    worker.check_alive()
                    self.runs.setdefault(f"latency_{step}", []).append(result)
                    say(
                        f"  latency {step} {result['rate']:,.0f} events/s: p50 "
                        f"{result['p50_ms']:.1f} p95 {result['p95_ms']:.1f} p99 "
                        f"{result['p99_ms']:.1f} ms over {result['samples']} exits "
                        f"({result['missing']} missing), run {i + 1}"
                    )
                    await topics.wait_for_lag_zero(
                        lat.kafka_bootstrap,
                        lat.group_id,
                        lat.input_topics,
                        timeout=size.timeout_seconds,
                    )
        finally:
            worker.stop()

    # -- helpers ------------------------------------------------------------------------------

    async def _module(self, module: str, group: str, *args: str, env: Any) -> dict[str, Any]:
        """Run ``python -m module --group G args``, trying again (in a new group) if it fails;
        return the JSON result it prints."""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                result = await self._module_once(
                    module, "--group", f"{group}-try{attempt}", *args, env=env
                )
            except (RuntimeError, TimeoutError) as exc:
                if attempt == ATTEMPTS:
                    raise
                self._incident(f"{module} {group}", "failed", str(exc))
                continue
            result["attempts"] = attempt
            return result
        raise AssertionError("unreachable")

    async def _module_once(self, module: str, *args: str, env: Any) -> dict[str, Any]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            *args,
            cwd=ROOT,
            env=dict(env),
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            stdout, _ = await asyncio.wait_for(proc.communicate(), self.size.timeout_seconds)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        if proc.returncode != 0:
            raise RuntimeError(f"{module} exited with code {proc.returncode}")
        result: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
        return result

    async def _cleanup(self) -> None:
        if not self.keep_topics:
            try:
                deleted = await kafka.delete_topics(self.base.kafka_bootstrap, self.prefix)
                say(f"deleted {len(deleted)} topics named {self.prefix}*")
            except Exception as exc:  # cleanup must not hide the run's own error
                say(f"could not delete the topics named {self.prefix}*: {exc}")
        if self.db_url:
            await asyncio.to_thread(database.drop, self.base.database_url, self.run_id)

    # -- figures ------------------------------------------------------------------------------

    def _results(self, started: datetime, load_start: list[float]) -> dict[str, Any]:
        size = self.size
        variants = {}
        for name, runs in self.runs.items():
            # A latency run that timed no exit at all measured nothing; it stays listed.
            counted = [r for r in runs if r.get("samples", 1) > 0] or runs
            variants[name] = {
                **{
                    key: median([r[key] for r in counted])
                    for key in runs[0]
                    if isinstance(runs[0][key], int | float)
                },
                "runs": runs,
            }
        return {
            "schema": 1,
            "run_id": self.run_id,
            "size": size.name,
            "started_at": started.isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "code": _code_version(),
            "machine": {
                "cores": os.cpu_count(),
                "load_average_start": load_start,
                "load_average_end": procstat.load_average(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "workload": {
                "events": size.events,
                "contacts": size.contacts,
                "active_enrollments": size.enrollments,
                "large_active_enrollments": size.large_enrollments,
                "partitions": size.partitions,
                "active_goals": WORKFLOWS,
                "scaled_active_goals": WORKFLOWS + size.extra_goals,
                "achieving_events": self.expected_achievements,
                "runs": size.runs,
                "latency_seconds": size.latency_seconds,
                "naive_max_seconds": size.naive_max_seconds,
            },
            "variants": variants,
            "state_loads": self.loads,
            "phases": sorted(self.phases, key=PHASES.index),
            "incidents": self.incidents,
            "summary": report.summary(variants, size),
        }


def _code_version() -> dict[str, Any]:
    """The commit the worker ran from, and whether goalworker/ had uncommitted changes."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "goalworker_changed": bool(git("status", "--porcelain", "--", "goalworker")),
    }

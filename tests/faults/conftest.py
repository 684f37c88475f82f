"""Fault runs: real workers, a real broker and database, and things going wrong on purpose.

Each run generates a stream with the demo's generator (which computes its expected outcome
independently of goalworker.matching), sends the enrollments and exits first and the events
after, does something harmful while the workers consume, and then checks the invariants with
``goalworker verify`` against the expected set. Short versions run in ``make test``; the long
ones are marked ``faults`` and run by ``make test-faults``.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from goalworker import demo, storage, topics
from goalworker.demo import DemoGoal, Plan, make_plan, settings_env
from goalworker.goals import validate_criteria
from goalworker.settings import Settings
from goalworker.verify import Report, verify

from ..integration.conftest import base_settings  # noqa: F401  (shared session fixture)

ROOT_DIR = Path(__file__).resolve().parents[2]


class Workers:
    """Worker processes sharing one consumer group, started, killed and stopped at will."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.settings = settings
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []
        self._started = 0

    def start(self) -> subprocess.Popen[bytes]:
        self._started += 1
        log = open(self.logs / f"worker-{self._started}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "goalworker", "worker"],
            env=settings_env(self.settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    @property
    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def kill_one(self, rng: random.Random) -> None:
        """SIGKILL a random live worker: no flush, no commit, no goodbye."""
        victim = rng.choice(self.alive)
        victim.kill()
        victim.wait()

    def stop_one(self, rng: random.Random, timeout: float = 60) -> float:
        """SIGTERM a random live worker; return how long it took to exit."""
        victim = rng.choice(self.alive)
        started = time.monotonic()
        victim.send_signal(signal.SIGTERM)
        victim.wait(timeout=timeout)
        return time.monotonic() - started

    def stop_all(self) -> None:
        for proc in self.alive:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    def crashed(self) -> list[str]:
        """Logs of workers that died on their own (not by our signals)."""
        return [
            f"worker {i + 1} exit {p.returncode}"
            for i, p in enumerate(self.procs)
            if p.returncode not in (None, 0, -signal.SIGKILL, -signal.SIGTERM)
        ]


class FaultRun:
    """One generated stream on private topics, its workers, and the final check."""

    def __init__(
        self, base: Settings, tmp: Path, contacts: int, seed: int, **overrides: object
    ) -> None:
        self.run_id = uuid.uuid4().hex[:8]
        self.settings = demo.demo_settings(base, self.run_id).model_copy(
            update={
                "group_id": f"goalworker-fault-{self.run_id}",
                "sweep_interval_seconds": 1.0,
                "sweep_min_age_seconds": 3.0,
                "batch_max_events": 200,
                **overrides,
            }
        )
        self.plan: Plan = make_plan(self.settings, self.run_id, contacts, seed)
        self.workers = Workers(self.settings, tmp)
        asyncio.run(self._prepare(self.plan.goals))

    async def _prepare(self, goals: list[DemoGoal]) -> None:
        s = self.settings
        await topics.create_topics(
            s.kafka_bootstrap,
            [*s.input_topics, s.topic_exit, s.topic_dead_letter],
            s.partitions,
            replication_factor=s.replication_factor,
        )
        engine = storage.make_engine(s.database_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    sa.insert(storage.goals),
                    [
                        {
                            "id": uuid.UUID(g.id),
                            "account_id": g.account_id,
                            "workflow_id": g.workflow_id,
                            "goal_type": g.goal_type,
                            "criteria": validate_criteria(g.goal_type, g.criteria),
                            "created_by": "fault-test",
                            "updated_by": "fault-test",
                        }
                        for g in goals
                    ],
                )
        finally:
            await engine.dispose()

    def send(self, records: list[tuple[str, bytes, bytes]]) -> None:
        async def _send() -> None:
            from aiokafka import AIOKafkaProducer

            producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap, acks="all")
            await producer.start()
            try:
                await demo._send_all(producer, records)
            finally:
                await producer.stop()

        asyncio.run(_send())

    def lag(self, topic_names: list[str] | None = None) -> int:
        s = self.settings
        try:
            return asyncio.run(
                topics.group_lag(s.kafka_bootstrap, s.group_id, topic_names or s.input_topics)
            )
        except Exception:  # the coordinator moves while brokers or workers come and go
            return -1

    def wait_caught_up(self, timeout: float, topic_names: list[str] | None = None) -> None:
        deadline = time.monotonic() + timeout
        while self.lag(topic_names) != 0:
            if time.monotonic() > deadline:
                pytest.fail(f"workers still lag after {timeout:.0f}s; logs in {self.workers.logs}")
            time.sleep(0.5)

    def check(self, timeout: float = 60) -> Report:
        """Wait for the sweep to settle, then run the invariant check against the plan."""
        expected = {e for ids in self.plan.expected_achieved.values() for e in ids}
        deadline = time.monotonic() + timeout
        while True:
            report = asyncio.run(
                verify(
                    self.settings,
                    account_prefix=f"acct-{self.run_id}-",
                    expected_enrollments=expected,
                )
            )
            if report.ok or time.monotonic() > deadline:
                return report
            time.sleep(1)


@pytest.fixture
def fault_run(base_settings: Settings, tmp_path: Path) -> Iterator[type[FaultRun]]:  # noqa: F811
    runs: list[FaultRun] = []

    def make(contacts: int, seed: int = 11, **overrides: object) -> FaultRun:
        run = FaultRun(base_settings, tmp_path, contacts, seed, **overrides)
        runs.append(run)
        return run

    yield make  # type: ignore[misc]
    for run in runs:
        run.workers.stop_all()

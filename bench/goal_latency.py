"""Goal-change latency: from the API's answer to the first event matched under the new goals.

Starts a worker and the API (``goalworker api``) as their own processes on private topics, the
worker's goal polling set far apart so that only pushed changes count. Then, for each change:
enrolls a fresh contact, changes the goals through the API (creating a goal, changing a goal's
criteria, reactivating a goal, in turn) and, from the moment the answer arrives, keeps
submitting a form that only the new configuration matches until the achievement is recorded.

Two numbers per change, both from the API's answer:

* matched: to the achievement's ``recorded_at`` (PostgreSQL's clock, the same host's), the
  start of the worker's transaction that records the first match;
* visible: to the moment this script sees the achievement row (adds up to one poll).

Run with the services' environment::

    eval "$(scripts/services.sh env)"; .venv/bin/python bench/goal_latency.py [--changes 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import SecretStr

from goalworker import storage, topics
from goalworker.auth import mint_token
from goalworker.cli import upgrade
from goalworker.demo import settings_env
from goalworker.settings import Settings

OUT = Path(__file__).resolve().parent / "out"
KINDS = ("create", "criteria", "reactivate")
#: Seconds between two submissions while waiting for a change to apply.
RESEND_SECONDS = 0.02
#: Seconds between two looks for the achievement row.
POLL_SECONDS = 0.005
#: Longest wait for one change before the run is declared failed, in seconds.
CHANGE_TIMEOUT_SECONDS = 30.0
#: Longest wait for an enrollment to be stored; the first one waits for the worker to start.
ENROLL_TIMEOUT_SECONDS = 120.0


def say(message: str) -> None:
    print(f"[goal-latency] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile, ``q`` in [0, 100]."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Run:
    """The worker and API processes of one run, and the means to drive them."""

    def __init__(self, base: Settings, changes: int) -> None:
        run = uuid.uuid4().hex[:8]
        self.run = run
        self.changes = changes
        self.account = f"latency-{run}"
        self.settings = base.model_copy(
            update={
                "group_id": f"goalworker-latency-{run}",
                "partitions": 3,
                # Polling out of the way: only the pushed notification can bring a change.
                "goal_refresh_seconds": 3600,
                **{
                    name: f"latency-{run}.{getattr(base, name)}"
                    for name in Settings.model_fields
                    if name.startswith("topic_")
                },
            }
        )
        self.secret = secrets.token_hex(32)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)

    # -- processes -------------------------------------------------------------------------

    def start(self) -> None:
        OUT.mkdir(exist_ok=True)
        env = settings_env(self.settings) | {"GOALWORKER_JWT_SECRET": self.secret}
        for name, args in (
            ("worker", ["worker"]),
            ("api", ["api", "--host", "127.0.0.1", "--port", str(self.port)]),
        ):
            log = open(OUT / f"goal_latency-{name}.log", "wb")  # noqa: SIM115 - lives with the process
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "goalworker", *args],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        say(f"worker and API started; logs in {OUT}/goal_latency-*.log")

    def stop(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()

    # -- the stream ------------------------------------------------------------------------

    def envelope(self, event_type: str, contact: str, at: datetime, data: dict[str, Any]) -> bytes:
        return orjson.dumps(
            {
                "event_id": f"evt-{uuid.uuid4().hex}",
                "type": event_type,
                "account_id": self.account,
                "contact_id": contact,
                "occurred_at": at.isoformat(),
                "data": data,
            }
        )

    async def enroll(
        self, producer: AIOKafkaProducer, db: psycopg.AsyncConnection[Any], workflow: str
    ) -> tuple[str, str]:
        """Enroll a fresh contact and wait until the worker has stored the enrollment."""
        contact, enrollment = f"c-{uuid.uuid4().hex[:8]}", f"e-{uuid.uuid4().hex}"
        data = {"workflow_id": workflow, "enrollment_id": enrollment}
        await producer.send_and_wait(
            self.settings.topic_enrollment,
            self.envelope("workflow.enrolled", contact, self.t0, data),
            key=contact.encode(),
        )
        deadline = time.monotonic() + ENROLL_TIMEOUT_SECONDS
        while not await _one(db, "SELECT 1 FROM enrollments WHERE enrollment_id = %s", enrollment):
            if time.monotonic() > deadline:
                raise TimeoutError(f"enrollment {enrollment} was not stored")
            await asyncio.sleep(POLL_SECONDS)
        return contact, enrollment

    async def submit_until_achieved(
        self,
        producer: AIOKafkaProducer,
        db: psycopg.AsyncConnection[Any],
        contact: str,
        enrollment: str,
        form: str,
    ) -> tuple[datetime, float]:
        """Submit ``form`` until the enrollment is achieved; its recorded_at and when seen."""
        at = self.t0 + timedelta(minutes=1)
        deadline = time.monotonic() + CHANGE_TIMEOUT_SECONDS
        next_send = 0.0
        while True:
            if time.monotonic() >= next_send:
                data = {"form_id": form, "submission_id": uuid.uuid4().hex[:8]}
                await producer.send(
                    self.settings.topic_form_submitted,
                    self.envelope("form.submitted", contact, at, data),
                    key=contact.encode(),
                )
                next_send = time.monotonic() + RESEND_SECONDS
            row = await _one(
                db, "SELECT recorded_at FROM achievements WHERE enrollment_id = %s", enrollment
            )
            if row is not None:
                return row[0], time.time()
            if time.monotonic() > deadline:
                raise TimeoutError(f"no achievement for {enrollment} after {form!r}")
            await asyncio.sleep(POLL_SECONDS)

    # -- the API ---------------------------------------------------------------------------

    async def wait_for_api(self, client: httpx.AsyncClient) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the API did not become ready")
            await asyncio.sleep(0.1)

    async def call(
        self, client: httpx.AsyncClient, method: str, url: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        response = await client.request(method, url, json=body)
        if response.status_code not in (200, 201):
            raise RuntimeError(f"{method} {url} answered {response.status_code}: {response.text}")
        answer: dict[str, Any] = response.json()
        return answer

    async def one_change(
        self,
        client: httpx.AsyncClient,
        producer: AIOKafkaProducer,
        db: psycopg.AsyncConnection[Any],
        i: int,
    ) -> dict[str, Any]:
        """Prepare, make and time the i-th change."""
        kind, workflow, new_form = KINDS[i % len(KINDS)], f"wf-{i}", f"form-{i}-new"
        goals = f"/api/v1/workflows/{workflow}/goals"
        prepared: dict[str, Any] | None = None
        if kind == "criteria":
            prepared = await self.call(
                client,
                "POST",
                goals,
                {"goal_type": "form_submitted", "criteria": {"form_id": f"form-{i}-old"}},
            )
        elif kind == "reactivate":
            prepared = await self.call(
                client,
                "POST",
                goals,
                {"goal_type": "form_submitted", "criteria": {"form_id": new_form}, "active": False},
            )
        contact, enrollment = await self.enroll(producer, db, workflow)

        method, url = "POST", goals
        body: dict[str, Any] = {"goal_type": "form_submitted", "criteria": {"form_id": new_form}}
        if prepared is not None:
            method, url = "PATCH", f"{goals}/{prepared['id']}"
            body = {"version": prepared["version"]}
            body |= {"criteria": {"form_id": new_form}} if kind == "criteria" else {"active": True}
        await self.call(client, method, url, body)
        answered = time.time()
        recorded_at, seen = await self.submit_until_achieved(
            producer, db, contact, enrollment, new_form
        )
        return {
            "kind": kind,
            "matched_ms": (recorded_at.timestamp() - answered) * 1000,
            "visible_ms": (seen - answered) * 1000,
        }

    async def measure(self) -> list[dict[str, Any]]:
        signing = self.settings.model_copy(update={"jwt_secret": SecretStr(self.secret)})
        token = mint_token(signing, self.account, "bench")
        headers = {"Authorization": f"Bearer {token}"}
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap, acks="all", linger_ms=0
        )
        await producer.start()
        db = await psycopg.AsyncConnection.connect(
            storage.libpq_url(self.settings.database_url), autocommit=True
        )
        try:
            async with httpx.AsyncClient(base_url=self.base_url, headers=headers) as client:
                await self.wait_for_api(client)
                say("API ready; warming up (the first change also waits for the worker to start)")
                # Kept out of the numbers: it includes the worker's start and partition assignment.
                warm = await self.one_change(client, producer, db, -1)
                say(f"warm-up change applied after {warm['visible_ms']:.0f} ms")
                samples = []
                for i in range(self.changes):
                    sample = await self.one_change(client, producer, db, i)
                    say(
                        f"change {i + 1}/{self.changes} ({sample['kind']}): matched after "
                        f"{sample['matched_ms']:.0f} ms, "
                        f"visible after {sample['visible_ms']:.0f} ms"
                    )
                    samples.append(sample)
                return samples
        finally:
            await db.close()
            await producer.stop()

    async def delete_topics(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap)
        await admin.start()
        try:
            mine = [
                t
                for t in await admin.list_topics()
                if t.startswith(f"latency-{self.run}.") or t.startswith(self.settings.group_id)
            ]
            if mine:
                await admin.delete_topics(mine)
        finally:
            await admin.close()


async def _one(db: psycopg.AsyncConnection[Any], query: str, *args: Any) -> Any:
    cursor = await db.execute(query, args)
    return await cursor.fetchone()


def summarize(samples: list[dict[str, Any]]) -> dict[str, Any]:
    def stats(values: list[float]) -> dict[str, float]:
        return {
            "median_ms": statistics.median(values),
            "p99_ms": percentile(values, 99),
            "max_ms": max(values),
        }

    summary: dict[str, Any] = {
        "changes": len(samples),
        "matched": stats([s["matched_ms"] for s in samples]),
        "visible": stats([s["visible_ms"] for s in samples]),
        "by_kind": {
            kind: stats([s["matched_ms"] for s in samples if s["kind"] == kind])
            for kind in KINDS
            if any(s["kind"] == kind for s in samples)
        },
    }
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=30, help="goal changes to time")
    args = parser.parse_args(argv)
    if not (
        os.environ.get("GOALWORKER_KAFKA_BOOTSTRAP") and os.environ.get("GOALWORKER_DATABASE_URL")
    ):
        say('set the services\' environment first: eval "$(scripts/services.sh env)"')
        return 2

    base = Settings()
    upgrade()
    run = Run(base, args.changes)
    names = [*run.settings.input_topics, run.settings.topic_exit, run.settings.topic_dead_letter]
    asyncio.run(topics.create_topics(run.settings.kafka_bootstrap, names, run.settings.partitions))
    run.start()
    try:
        samples = asyncio.run(run.measure())
    finally:
        run.stop()
        asyncio.run(run.delete_topics())
    summary = summarize(samples)
    (OUT / "goal_latency.json").write_text(
        json.dumps({"summary": summary, "samples": samples}, indent=2)
    )
    m, v = summary["matched"], summary["visible"]
    print(f"goal changes timed: {summary['changes']} (create, criteria, reactivate in turn)")
    print(
        f"API answer -> first event matched: median {m['median_ms']:.0f} ms, "
        f"p99 {m['p99_ms']:.0f} ms, max {m['max_ms']:.0f} ms"
    )
    print(
        f"API answer -> achievement visible: median {v['median_ms']:.0f} ms, "
        f"p99 {v['p99_ms']:.0f} ms, max {v['max_ms']:.0f} ms"
    )
    for kind, k in summary["by_kind"].items():
        print(f"  {kind:<10} matched: median {k['median_ms']:.0f} ms, p99 {k['p99_ms']:.0f} ms")
    target_met = m["p99_ms"] < 1000
    print(f"target p99 < 1000 ms: {'met' if target_met else 'MISSED'}")
    return 0 if target_met else 1


if __name__ == "__main__":
    sys.exit(main())

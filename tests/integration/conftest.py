"""Fixtures that run the real worker against the real Kafka broker and PostgreSQL.

The services come from GOALWORKER_KAFKA_BOOTSTRAP and GOALWORKER_DATABASE_URL (the Makefile
sets both and starts the local services). Each test module gets its own topics and consumer
group, each test its own account, so tests never see each other's data.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaProducer

from goalworker import storage, topics
from goalworker.cli import upgrade
from goalworker.demo import settings_env
from goalworker.goals import validate_criteria
from goalworker.settings import Settings

from .goals_api import Api, running_api

pytestmark = pytest.mark.integration

HOW_TO_START = (
    "integration tests need Kafka and PostgreSQL: run `make test` (it starts both), or "
    '`make services-up` then `eval "$(scripts/services.sh env)"`, or point '
    "GOALWORKER_KAFKA_BOOTSTRAP and GOALWORKER_DATABASE_URL at running services"
)
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)


def wait_until(check: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    if not (
        os.environ.get("GOALWORKER_KAFKA_BOOTSTRAP") and os.environ.get("GOALWORKER_DATABASE_URL")
    ):
        if (
            shutil.which("docker")
            and subprocess.run(["docker", "info"], capture_output=True).returncode == 0
        ):
            pytest.fail(
                HOW_TO_START
                + " (a Docker engine is here: `docker compose -f docker-compose.kafka.yml up -d`)"
            )
        pytest.fail(HOW_TO_START)
    settings = Settings()
    upgrade()
    return settings


class Harness:
    """A running worker on private topics, and the means to feed and inspect it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = sa.create_engine(settings.database_url)
        self._n = 0

    # -- input ---------------------------------------------------------------------------

    def envelope(
        self,
        event_type: str,
        account: str,
        contact: str,
        at: datetime,
        data: dict[str, Any],
        **extra: Any,
    ) -> dict[str, Any]:
        self._n += 1
        return {
            "event_id": f"evt-{uuid.uuid4().hex}",
            "type": event_type,
            "account_id": account,
            "contact_id": contact,
            "occurred_at": at.isoformat(),
            "data": data,
        } | extra

    def produce(self, *records: tuple[str, bytes | None, bytes | None]) -> None:
        asyncio.run(self._produce(records))

    async def _produce(self, records: tuple[tuple[str, bytes | None, bytes | None], ...]) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for topic, key, value in records:
                await producer.send_and_wait(topic, value, key=key)
        finally:
            await producer.stop()

    def send(self, topic: str, envelope: dict[str, Any]) -> dict[str, Any]:
        self.produce((topic, envelope["contact_id"].encode(), orjson.dumps(envelope)))
        return envelope

    def enroll(
        self,
        account: str,
        contact: str,
        workflow: str,
        enrollment: str,
        at: datetime = T0,
        wait: bool = True,
    ) -> None:
        """Enroll a contact; by default wait until the worker has stored the enrollment.

        Topics are not ordered among each other: an event sent right after its enrollment
        may be processed before it, so tests that need the order wait for the enrollment.
        """
        data = {"workflow_id": workflow, "enrollment_id": enrollment}
        self.send(
            self.settings.topic_enrollment,
            self.envelope("workflow.enrolled", account, contact, at, data),
        )
        if wait:
            wait_until(
                lambda: self.enrollment_row(enrollment),
                what=f"enrollment {enrollment} to be stored",
            )

    def exit(
        self, account: str, contact: str, workflow: str, enrollment: str, at: datetime
    ) -> None:
        data = {"workflow_id": workflow, "enrollment_id": enrollment, "reason": "manual"}
        self.send(
            self.settings.topic_enrollment,
            self.envelope("workflow.exited", account, contact, at, data),
        )

    def tag(
        self, account: str, contact: str, name: str, at: datetime, tag_id: str = "t-x"
    ) -> dict[str, Any]:
        data = {"tag_id": tag_id, "tag_name": name}
        return self.send(
            self.settings.topic_tag_added,
            self.envelope("contact.tag.added", account, contact, at, data),
        )

    # -- goals ---------------------------------------------------------------------------

    def add_goals(self, *goals: tuple[str, str, str, dict[str, Any]]) -> list[uuid.UUID]:
        """Insert goals (account, workflow, type, criteria); return once the worker has them.

        A probe goal goes in with them, in the same transaction; once a probe event has
        achieved it, the worker's cache holds every goal of that transaction.
        """
        probe_account, probe_contact = f"probe-{uuid.uuid4().hex[:8]}", "probe-contact"
        rows = [
            {
                "id": uuid.uuid4(),
                "account_id": a,
                "workflow_id": w,
                "goal_type": t,
                "criteria": validate_criteria(t, c),
                "created_by": "test",
                "updated_by": "test",
            }
            for a, w, t, c in [
                *goals,
                (probe_account, "probe-wf", "form_submitted", {"form_id": "probe"}),
            ]
        ]
        with self.engine.begin() as conn:
            conn.execute(sa.insert(storage.goals), rows)
        self.enroll(probe_account, probe_contact, "probe-wf", f"enr-{probe_account}", wait=False)
        data = {"form_id": "probe", "submission_id": "s"}
        wait_until(
            lambda: self._probe(probe_account, probe_contact, data),
            what="the worker to load new goals",
        )
        return [r["id"] for r in rows[:-1]]

    def _probe(self, account: str, contact: str, data: dict[str, Any]) -> bool:
        if self.achievements(account):
            return True
        self.send(
            self.settings.topic_form_submitted,
            self.envelope("form.submitted", account, contact, T0 + timedelta(minutes=1), data),
        )
        time.sleep(0.3)
        return bool(self.achievements(account))

    # -- output --------------------------------------------------------------------------

    def achievements(self, account: str) -> list[Any]:
        a = storage.achievements
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(a).where(a.c.account_id == account).order_by(a.c.recorded_at)
                ).mappings()
            )

    def enrollment_row(self, enrollment: str) -> Any:
        e = storage.enrollments
        with self.engine.connect() as conn:
            return (
                conn.execute(sa.select(e).where(e.c.enrollment_id == enrollment)).mappings().first()
            )

    def exit_commands(self, account: str) -> list[dict[str, Any]]:
        records = asyncio.run(
            topics.read_all(self.settings.kafka_bootstrap, self.settings.topic_exit)
        )
        commands = [orjson.loads(r.value) | {"_key": r.key} for r in records if r.value]
        return [c for c in commands if c["account_id"] == account]

    def dead_letters(self) -> list[topics.Record]:
        return asyncio.run(
            topics.read_all(self.settings.kafka_bootstrap, self.settings.topic_dead_letter)
        )


@pytest.fixture(scope="module")
def api(base_settings: Settings) -> Iterator[Api]:
    """The goals API served by uvicorn in this process, with a client that mints tokens."""
    with running_api(base_settings) as api:
        yield api


@pytest.fixture(scope="module")
def db(base_settings: Settings) -> Iterator[sa.Engine]:
    """A plain engine on the test database, for checks the API does not expose."""
    engine = sa.create_engine(base_settings.database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def harness(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    run = uuid.uuid4().hex[:8]
    prefix = f"test-{run}."
    settings = base_settings.model_copy(
        update={
            "group_id": f"goalworker-test-{run}",
            "partitions": 3,
            # Far apart, so the tests show that pushed changes (LISTEN/NOTIFY) reach the worker.
            "goal_refresh_seconds": 3600,
            "sweep_interval_seconds": 0.5,
            "sweep_min_age_seconds": 5,
            **{
                name: prefix + getattr(base_settings, name)
                for name in Settings.model_fields
                if name.startswith("topic_")
            },
        }
    )
    asyncio.run(
        topics.create_topics(
            settings.kafka_bootstrap,
            [*settings.input_topics, settings.topic_exit, settings.topic_dead_letter],
            settings.partitions,
        )
    )
    log_path: Path = tmp_path_factory.mktemp("worker") / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "goalworker", "worker"],
            env=settings_env(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        harness = Harness(settings)
        try:
            yield harness
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
            harness.engine.dispose()
            if worker.returncode not in (0, -signal.SIGTERM):
                print(log_path.read_text()[-5000:])

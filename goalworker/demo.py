"""The demo: a realistic generated stream through the real worker, and a summary to check.

``run`` seeds goals, starts ``goalworker worker`` and ``goalworker demo-producer`` as two
processes on run-scoped topics, waits until the worker has committed every record, then
compares what PostgreSQL and the ``workflow.exit`` topic hold with the outcome computed from
the generated stream by a deliberately plain, independent rule.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr

from goalworker import storage, topics
from goalworker.settings import Settings
from goalworker.verify import verify

TAG_NAMES = ["VIP", "Newsletter", "Webinar Attendee", "Churn Risk", "Trial", "Purchased"]
PRODUCTS = [f"prod-{i}" for i in range(1, 13)]
CALENDARS = ["cal-sales", "cal-support", "cal-onboarding"]
FORMS = ["form-contact", "form-demo-request", "form-survey"]
PIPELINE = "pipe-sales"
STAGES = ["stage-lead", "stage-qualified", "stage-proposal", "stage-won"]


def demo_settings(base: Settings, run_id: str) -> Settings:
    """Settings whose topics and group belong to one demo run only."""
    prefix = f"demo-{run_id}."
    names = {
        "topic_tag_added": "contact.tag.added",
        "topic_payment_completed": "payment.completed",
        "topic_appointment_booked": "appointment.booked",
        "topic_form_submitted": "form.submitted",
        "topic_pipeline_stage_changed": "pipeline.stage.changed",
        "topic_enrollment": "workflow.enrollment",
        "topic_exit": "workflow.exit",
        "topic_dead_letter": "goalworker.dlq",
    }
    return base.model_copy(
        update={k: prefix + v for k, v in names.items()} | {"group_id": f"goalworker-demo-{run_id}"}
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process these settings."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is None:
            env.pop(f"GOALWORKER_{name.upper()}", None)
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[f"GOALWORKER_{name.upper()}"] = str(value)
    return env


# -- the generated world --------------------------------------------------------------------


@dataclass
class DemoGoal:
    id: str
    account_id: str
    workflow_id: str
    goal_type: str
    criteria: dict[str, Any]


@dataclass
class Plan:
    goals: list[DemoGoal]
    #: Enrollment and exit records: sent first, so the worker knows every span.
    enrollment_records: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    #: Contact events and a few malformed records, in time order.
    event_records: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    expected_achieved: dict[str, list[str]] = field(default_factory=dict)
    enrolled: dict[str, int] = field(default_factory=dict)
    malformed: int = 0


def _goals(run_id: str) -> list[DemoGoal]:
    specs: list[tuple[int, int, str, dict[str, Any]]] = [
        (0, 0, "tag_added", {"tag_name": "  vip "}),
        (0, 0, "purchase_made", {"min_amount": "100.00", "currency": "USD"}),
        (0, 1, "appointment_booked", {"calendar_id": "cal-sales", "status": "confirmed"}),
        (0, 1, "form_submitted", {"form_id": "form-demo-request"}),
        (1, 0, "pipeline_stage_reached", {"pipeline_id": PIPELINE, "stage_id": "stage-won"}),
        (1, 0, "purchase_made", {"product_ids": ["prod-3", "prod-7"]}),
        (1, 1, "tag_added", {"tag_name": "Webinar Attendee"}),
        (1, 1, "appointment_booked", {}),
        (2, 0, "form_submitted", {"form_id": "form-survey"}),
        (2, 0, "tag_added", {"tag_id": "tag-2"}),
        (2, 1, "pipeline_stage_reached", {"pipeline_id": PIPELINE, "stage_id": "stage-proposal"}),
        (2, 1, "purchase_made", {}),
    ]
    return [
        DemoGoal(
            str(uuid.uuid5(uuid.NAMESPACE_URL, f"goalworker-demo/{run_id}/{i}")),
            f"acct-{run_id}-{a}",
            f"wf-{run_id}-{a}-{w}",
            goal_type,
            criteria,
        )
        for i, (a, w, goal_type, criteria) in enumerate(specs)
    ]


def _meets(goal: DemoGoal, event_type: str, data: dict[str, Any]) -> bool:
    """The plain reading of the goal rules, written apart from goalworker.matching."""
    c = goal.criteria
    if goal.goal_type == "tag_added" and event_type == "contact.tag.added":
        by_id = "tag_id" in c and c["tag_id"] == data["tag_id"]
        by_name = (
            "tag_name" in c and c["tag_name"].strip().lower() == data["tag_name"].strip().lower()
        )
        return by_id or by_name
    if goal.goal_type == "purchase_made" and event_type == "payment.completed":
        if c.get("product_ids") and not set(c["product_ids"]) & set(data["product_ids"]):
            return False
        if "min_amount" in c:
            return data["currency"] == c["currency"] and Decimal(data["amount"]) >= Decimal(
                c["min_amount"]
            )
        return True
    if goal.goal_type == "appointment_booked" and event_type == "appointment.booked":
        if "calendar_id" in c and c["calendar_id"] != data["calendar_id"]:
            return False
        return "status" not in c or c["status"].lower() == data["status"].lower()
    if goal.goal_type == "form_submitted" and event_type == "form.submitted":
        return bool(c["form_id"] == data["form_id"])
    if goal.goal_type == "pipeline_stage_reached" and event_type == "pipeline.stage.changed":
        return bool(c["pipeline_id"] == data["pipeline_id"] and c["stage_id"] == data["stage_id"])
    return False


def _random_data(rng: random.Random, event_type: str, n: int) -> dict[str, Any]:
    if event_type == "contact.tag.added":
        i = rng.randrange(len(TAG_NAMES))
        name = TAG_NAMES[i]
        name = rng.choice([name, name.lower(), f" {name.upper()} "])
        return {"tag_id": f"tag-{i}", "tag_name": name}
    if event_type == "payment.completed":
        return {
            "payment_id": f"pay-{n}",
            "amount": f"{rng.randint(5, 250)}.{rng.randint(0, 99):02d}",
            "currency": rng.choice(["USD", "USD", "EUR"]),
            "product_ids": rng.sample(PRODUCTS, rng.randint(0, 2)),
        }
    if event_type == "appointment.booked":
        return {
            "appointment_id": f"appt-{n}",
            "calendar_id": rng.choice(CALENDARS),
            "status": rng.choice(["confirmed", "Confirmed", "pending", "cancelled"]),
        }
    if event_type == "form.submitted":
        return {"form_id": rng.choice(FORMS), "submission_id": f"sub-{n}"}
    return {
        "opportunity_id": f"opp-{n}",
        "pipeline_id": PIPELINE,
        "stage_id": rng.choice(STAGES),
    }


def _ts(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def make_plan(settings: Settings, run_id: str, contacts: int, seed: int) -> Plan:
    """Generate the demo stream and its expected outcome."""
    rng = random.Random(seed)
    goals = _goals(run_id)
    plan = Plan(goals)
    workflows = sorted({(g.account_id, g.workflow_id) for g in goals})
    accounts = sorted({a for a, _ in workflows})
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(minutes=5)
    events: list[tuple[datetime, str, bytes, bytes]] = []
    n = 0

    def envelope(
        event_type: str, account: str, contact: str, at: datetime, data: dict[str, Any]
    ) -> bytes:
        nonlocal n
        n += 1
        return orjson.dumps(
            {
                "event_id": f"evt-{run_id}-{n}",
                "type": event_type,
                "account_id": account,
                "contact_id": contact,
                "occurred_at": _ts(at),
                "data": data,
            }
        )

    for c in range(contacts):
        account = rng.choice(accounts)
        contact = f"contact-{run_id}-{c}"
        spans = []
        for _, workflow in (w for w in workflows if w[0] == account):
            if rng.random() < 0.6:
                continue
            enrollment = f"enr-{run_id}-{c}-{workflow}"
            enrolled_at = start + timedelta(seconds=rng.randint(0, 120))
            exited_at = (
                enrolled_at + timedelta(seconds=rng.randint(10, 120))
                if rng.random() < 0.15
                else None
            )
            plan.enrolled[workflow] = plan.enrolled.get(workflow, 0) + 1
            data = {"workflow_id": workflow, "enrollment_id": enrollment}
            plan.enrollment_records.append(
                (
                    settings.topic_enrollment,
                    contact.encode(),
                    envelope("workflow.enrolled", account, contact, enrolled_at, data),
                )
            )
            if exited_at:
                exit_data = data | {"reason": "manual"}
                plan.enrollment_records.append(
                    (
                        settings.topic_enrollment,
                        contact.encode(),
                        envelope("workflow.exited", account, contact, exited_at, exit_data),
                    )
                )
            spans.append((enrollment, workflow, enrolled_at, exited_at))
        # Contacts not enrolled anywhere still send events: most traffic matches nothing.
        for _ in range(rng.randint(2, 6)):
            event_type = rng.choice(list(settings.topic_of_event_type))
            at = start + timedelta(seconds=rng.randint(-60, 280))
            data = _random_data(rng, event_type, n)
            topic = settings.topic_of_event_type[event_type]
            events.append(
                (at, topic, contact.encode(), envelope(event_type, account, contact, at, data))
            )
            for enrollment, workflow, enrolled_at, exited_at in spans:
                open_then = enrolled_at <= at and (exited_at is None or at < exited_at)
                if open_then and any(
                    _meets(g, event_type, data)
                    for g in goals
                    if g.workflow_id == workflow and g.account_id == account
                ):
                    achieved = plan.expected_achieved.setdefault(workflow, [])
                    if enrollment not in achieved:
                        achieved.append(enrollment)

    events.sort(key=lambda e: e[0])
    plan.event_records = [(t, k, v) for _, t, k, v in events]
    _add_malformed(plan, settings, run_id, accounts[0])
    return plan


def _add_malformed(plan: Plan, settings: Settings, run_id: str, account: str) -> None:
    contact = f"contact-{run_id}-0"
    good: dict[str, Any] = {
        "event_id": f"evt-{run_id}-bad",
        "type": "payment.completed",
        "account_id": account,
        "contact_id": contact,
        "occurred_at": "2026-01-01T00:00:00Z",
        "data": {"payment_id": "p", "amount": "10.00", "currency": "USD", "product_ids": []},
    }
    pay = settings.topic_payment_completed
    bad: list[tuple[str, bytes, bytes]] = [
        (pay, contact.encode(), b'{"event_id": "half a record'),
        (pay, contact.encode(), b"\xff\xfe not utf-8"),
        (pay, contact.encode(), orjson.dumps(good | {"data": good["data"] | {"amount": 10.0}})),
        (pay, contact.encode(), orjson.dumps({k: v for k, v in good.items() if k != "account_id"})),
        (pay, b"someone-else", orjson.dumps(good)),
        (pay, contact.encode(), orjson.dumps(good | {"type": "payment.refunded"})),
        (pay, contact.encode(), orjson.dumps(good | {"occurred_at": "2026-01-01T00:00:00"})),
        (settings.topic_tag_added, contact.encode(), orjson.dumps(good)),
    ]
    step = max(len(plan.event_records) // (len(bad) + 1), 1)
    for i, record in enumerate(bad):
        plan.event_records.insert((i + 1) * step, record)
    plan.malformed = len(bad)


# -- the producer process -------------------------------------------------------------------


def produce(
    settings: Settings, *, run_id: str, contacts: int, seed: int, expected_path: Path
) -> None:
    """Send the demo stream: enrollments first, then (once the worker has them) the events."""
    plan = make_plan(settings, run_id, contacts, seed)
    expected_path.write_text(
        json.dumps(
            {
                "achieved": plan.expected_achieved,
                "enrolled": plan.enrolled,
                "malformed": plan.malformed,
            }
        )
    )
    asyncio.run(_produce(settings, plan))


async def _produce(settings: Settings, plan: Plan) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        await _send_all(producer, plan.enrollment_records)
        print(f"producer: sent {len(plan.enrollment_records)} enrollment records", flush=True)
        # Cross-topic order is not guaranteed; give the worker every span before the events.
        await topics.wait_for_lag_zero(
            settings.kafka_bootstrap, settings.group_id, [settings.topic_enrollment], timeout=300
        )
        await _send_all(producer, plan.event_records)
        print(f"producer: sent {len(plan.event_records)} event records", flush=True)
    finally:
        await producer.stop()


async def _send_all(producer: AIOKafkaProducer, records: list[tuple[str, bytes, bytes]]) -> None:
    futures = [await producer.send(topic, value, key=key) for topic, key, value in records]
    await asyncio.gather(*futures)


# -- the orchestrating command --------------------------------------------------------------


def run(base: Settings, *, contacts: int, seed: int, timeout: float) -> int:
    """Run the whole demo; return the process exit code (0 when everything checks out)."""
    from goalworker.cli import upgrade

    run_id = uuid.uuid4().hex[:8]
    settings = demo_settings(base, run_id)
    logs = Path(os.environ.get("GOALWORKER_DEMO_LOGS", ".services/logs"))
    logs.mkdir(parents=True, exist_ok=True)
    print(f"demo run {run_id}: {contacts} contacts, topics demo-{run_id}.*, logs in {logs}/")

    upgrade()
    asyncio.run(_prepare(settings, _goals(run_id)))
    env = settings_env(settings)
    worker_log = open(logs / f"demo-{run_id}-worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        [sys.executable, "-m", "goalworker", "worker"],
        env=env,
        stdout=worker_log,
        stderr=subprocess.STDOUT,
    )
    expected_path = logs / f"demo-{run_id}-expected.json"
    started = time.monotonic()
    try:
        producer = subprocess.run(
            [
                sys.executable,
                "-m",
                "goalworker",
                "demo-producer",
                "--run-id",
                run_id,
                "--contacts",
                str(contacts),
                "--seed",
                str(seed),
                "--expected",
                str(expected_path),
            ],
            env=env,
            timeout=timeout,
            check=False,
        )
        if producer.returncode != 0:
            print(f"producer failed with exit code {producer.returncode}")
            return 1
        asyncio.run(
            topics.wait_for_lag_zero(
                settings.kafka_bootstrap, settings.group_id, settings.input_topics, timeout
            )
        )
        elapsed = time.monotonic() - started
        expected = json.loads(expected_path.read_text())
        return asyncio.run(_summary(settings, run_id, expected, elapsed))
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        worker_log.close()


async def _prepare(settings: Settings, goals: list[DemoGoal]) -> None:
    await topics.create_topics(
        settings.kafka_bootstrap,
        [*settings.input_topics, settings.topic_exit, settings.topic_dead_letter],
        settings.partitions,
    )
    engine = storage.make_engine(settings.database_url)
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
                        "criteria": g.criteria,
                        "created_by": "demo",
                        "updated_by": "demo",
                    }
                    for g in goals
                ],
            )
    finally:
        await engine.dispose()


async def _summary(
    settings: Settings, run_id: str, expected: dict[str, Any], elapsed: float
) -> int:
    ends = await topics.end_offsets(settings.kafka_bootstrap, settings.input_topics)
    consumed = sum(ends.values())
    exits = await topics.read_all(settings.kafka_bootstrap, settings.topic_exit)
    dead = await topics.read_all(settings.kafka_bootstrap, settings.topic_dead_letter)
    engine = storage.make_engine(settings.database_url)
    a = storage.achievements
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(
                        a.c.workflow_id, a.c.goal_type, a.c.enrollment_id, a.c.published_at
                    ).where(a.c.account_id.like(f"acct-{run_id}-%"))
                )
            ).all()
    finally:
        await engine.dispose()

    by_type = Counter(r.goal_type for r in rows)
    achieved_by_wf: dict[str, set[str]] = {}
    for r in rows:
        achieved_by_wf.setdefault(r.workflow_id, set()).add(r.enrollment_id)
    commands = [orjson.loads(r.value) for r in exits if r.value]
    command_ids = {c["command_id"] for c in commands}
    reasons = Counter(
        r.headers.get("goalworker.error.reason", b"?").decode().split(":")[0][:90] for r in dead
    )

    print(f"\n== goalworker demo {run_id} ==")
    rate = consumed / max(elapsed, 1e-9)
    unpublished = sum(r.published_at is None for r in rows)
    print(f"events consumed:           {consumed} (in {elapsed:.1f}s, {rate:.0f}/s end to end)")
    print(f"achievements recorded:     {len(rows)}  (unpublished: {unpublished})")
    for goal_type, count in sorted(by_type.items()):
        print(f"  {goal_type:<24} {count}")
    distinct = len(command_ids)
    print(f"exit commands on topic:    {len(commands)} records, {distinct} distinct command ids")
    print(f"dead-letter records:       {len(dead)} (expected {expected['malformed']})")
    for reason, count in reasons.most_common():
        print(f"  {count} x {reason}")
    print("conversion per workflow:   enrolled  achieved  expected  rate")
    ok = len(dead) == expected["malformed"] and len(command_ids) == len(rows)
    for workflow, enrolled in sorted(expected["enrolled"].items()):
        got = len(achieved_by_wf.get(workflow, ()))
        want = len(expected["achieved"].get(workflow, ()))
        ok &= got == want and set(expected["achieved"].get(workflow, ())) == achieved_by_wf.get(
            workflow, set()
        )
        print(f"  {workflow:<24} {enrolled:>8}  {got:>8}  {want:>8}  {got / enrolled:6.1%}")
    expected_enrollments = {e for ids in expected["achieved"].values() for e in ids}
    report = await verify(
        settings, account_prefix=f"acct-{run_id}-", expected_enrollments=expected_enrollments
    )
    print("invariant check (goalworker verify):")
    for line in report.lines():
        print(f"  {line}")
    ok &= report.ok
    print(
        "result: "
        + (
            "OK, everything matches the independently computed outcome"
            if ok
            else "MISMATCH, see above"
        )
    )
    return 0 if ok else 1

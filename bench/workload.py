"""The generated world of a run: accounts, workflows, goals, contacts, enrollments, events.

Everything derives from the run id and a seed. Five accounts have two workflows each and every
workflow one goal, of the five goal types in turn, with criteria no other workflow shares. A
contact belongs to one account and may be enrolled in either of its two workflows.

The event mix, per event:

* achieving (``ACHIEVING_SHARE``): an event of an enrolled contact that meets the goal of that
  enrollment's workflow; every enrollment is achieved at most once, so the expected number of
  achievements is exactly the number of these events;
* near miss (``NEAR_MISS_SHARE``): an event that meets the goal of a workflow of the contact's
  account in which the contact is not enrolled, so it is checked but achieves nothing;
* ordinary (the rest): any contact, any type, values no goal names.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

#: (goal type, the event type that achieves it) in the order workflows take them.
GOAL_TYPES = [
    ("tag_added", "contact.tag.added"),
    ("purchase_made", "payment.completed"),
    ("appointment_booked", "appointment.booked"),
    ("form_submitted", "form.submitted"),
    ("pipeline_stage_reached", "pipeline.stage.changed"),
]
EVENT_TYPES = [event_type for _, event_type in GOAL_TYPES]
ACCOUNTS = 5
WORKFLOWS_PER_ACCOUNT = 2
WORKFLOWS = ACCOUNTS * WORKFLOWS_PER_ACCOUNT
ACHIEVING_SHARE = 0.01
NEAR_MISS_SHARE = 0.01
#: Every seventh idle contact of the large state has two enrollments, the rest one; about the
#: same enrollments per enrolled contact (1.14) as the main stream.
IDLE_PAIR_EVERY = 7


@dataclass(frozen=True, slots=True)
class BenchGoal:
    """A goal row as the benchmark inserts it."""

    id: uuid.UUID
    account_id: str
    workflow_id: str
    goal_type: str
    criteria: dict[str, Any]
    created_by: str


@dataclass(frozen=True, slots=True)
class Enrollment:
    """An active enrollment as produced to Kafka and copied into PostgreSQL."""

    enrollment_id: str
    account_id: str
    workflow_id: str
    contact_id: str


def _ts(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _goal_data(goal_type: str, tag: str, n: int) -> dict[str, Any]:
    """Event data that meets the criteria ``_criteria(goal_type, tag)`` builds."""
    match goal_type:
        case "tag_added":
            return {"tag_id": f"{tag}tag", "tag_name": f"Tag {tag}"}
        case "purchase_made":
            return {
                "payment_id": f"pay-{n}",
                "amount": "99.00",
                "currency": "USD",
                "product_ids": [f"prod-{n % 100}", f"{tag}prod"],
            }
        case "appointment_booked":
            return {"appointment_id": f"ap-{n}", "calendar_id": f"{tag}cal", "status": "Confirmed"}
        case "form_submitted":
            return {"form_id": f"{tag}form", "submission_id": f"sub-{n}"}
        case _:
            return {"opportunity_id": f"op-{n}", "pipeline_id": f"{tag}pipe", "stage_id": "won"}


def _criteria(goal_type: str, tag: str) -> dict[str, Any]:
    match goal_type:
        case "tag_added":
            return {"tag_id": f"{tag}tag"}
        case "purchase_made":
            return {"product_ids": [f"{tag}prod"]}
        case "appointment_booked":
            return {"calendar_id": f"{tag}cal", "status": "confirmed"}
        case "form_submitted":
            return {"form_id": f"{tag}form"}
        case _:
            return {"pipeline_id": f"{tag}pipe", "stage_id": "won"}


def _ordinary_data(rng: random.Random, event_type: str, n: int) -> dict[str, Any]:
    """Event data whose values no goal names."""
    match event_type:
        case "contact.tag.added":
            i = rng.randrange(50)
            return {"tag_id": f"tag-{i}", "tag_name": f"Tag {i}"}
        case "payment.completed":
            return {
                "payment_id": f"pay-{n}",
                "amount": f"{rng.randint(1, 500)}.{rng.randrange(100):02d}",
                "currency": rng.choice(("USD", "EUR")),
                "product_ids": [f"prod-{rng.randrange(100)}" for _ in range(rng.randint(0, 3))],
            }
        case "appointment.booked":
            return {
                "appointment_id": f"ap-{n}",
                "calendar_id": f"cal-{rng.randrange(10)}",
                "status": rng.choice(("confirmed", "pending", "cancelled")),
            }
        case "form.submitted":
            return {"form_id": f"form-{rng.randrange(20)}", "submission_id": f"sub-{n}"}
        case _:
            return {
                "opportunity_id": f"op-{n}",
                "pipeline_id": f"pipe-{rng.randrange(5)}",
                "stage_id": f"stage-{rng.randrange(6)}",
            }


class World:
    """Accounts, workflows, goals, contacts and the main stream's enrollments of one run."""

    def __init__(self, run_id: str, contacts: int, enrollments: int, seed: int = 5) -> None:
        if enrollments > contacts * WORKFLOWS_PER_ACCOUNT:
            raise ValueError("at most two enrollments per contact: raise the contact count")
        self.run_id = run_id
        self.contacts = contacts
        rng = random.Random(seed)
        # One pair per (contact, workflow slot): pair = contact * 2 + slot.
        self.pairs: list[int] = rng.sample(range(contacts * WORKFLOWS_PER_ACCOUNT), enrollments)
        self.enrolled = frozenset(self.pairs)
        now = datetime.now(UTC).replace(microsecond=0)
        self.enrolled_at = now - timedelta(hours=2)
        #: Pre-produced events occur from here on, one millisecond apart.
        self.events_from = now - timedelta(hours=1)

    # -- ids -----------------------------------------------------------------------------

    def account_id(self, account: int) -> str:
        return f"acct-{self.run_id}-{account}"

    def workflow_id(self, workflow: int) -> str:
        return f"wf-{self.run_id}-{workflow}"

    def contact_id(self, contact: int) -> str:
        return f"c-{self.run_id}-{contact}"

    @staticmethod
    def workflow_of(pair: int) -> int:
        contact, slot = divmod(pair, WORKFLOWS_PER_ACCOUNT)
        return (contact % ACCOUNTS) * WORKFLOWS_PER_ACCOUNT + slot

    @staticmethod
    def goal_type_of(workflow: int) -> tuple[str, str]:
        return GOAL_TYPES[workflow % len(GOAL_TYPES)]

    # -- goals ---------------------------------------------------------------------------

    def goals(self) -> list[BenchGoal]:
        """The ten goals the stream meets, one per workflow."""
        return [
            BenchGoal(
                uuid.uuid5(uuid.NAMESPACE_URL, f"goalworker-bench/{self.run_id}/{w}"),
                self.account_id(w // WORKFLOWS_PER_ACCOUNT),
                self.workflow_id(w),
                self.goal_type_of(w)[0],
                _criteria(self.goal_type_of(w)[0], f"g{w}"),
                "bench",
            )
            for w in range(WORKFLOWS)
        ]

    def extra_goals(self, count: int) -> Iterator[BenchGoal]:
        """Goals no event meets: 1% on the stream's workflows, the rest in other accounts."""
        on_stream = count // 100
        for i in range(count):
            goal_type = GOAL_TYPES[i % len(GOAL_TYPES)][0]
            if i < on_stream:
                # On a stream workflow; the goal type cycles through all five, so the
                # workflow's own type gets non-matching siblings in the index too.
                workflow = i % WORKFLOWS
                account_id = self.account_id(workflow // WORKFLOWS_PER_ACCOUNT)
                workflow_id = self.workflow_id(workflow)
            else:
                account_id = f"xacct-{self.run_id}-{i // 50}"
                workflow_id = f"xwf-{self.run_id}-{i // 10}"
            yield BenchGoal(
                uuid.uuid5(uuid.NAMESPACE_URL, f"goalworker-bench/{self.run_id}/x{i}"),
                account_id,
                workflow_id,
                goal_type,
                _criteria(goal_type, f"x{i}-"),
                "bench-extra",
            )

    # -- enrollments ---------------------------------------------------------------------

    def enrollment(self, pair: int) -> Enrollment:
        contact = pair // WORKFLOWS_PER_ACCOUNT
        return Enrollment(
            f"enr-{self.run_id}-{pair}",
            self.account_id(contact % ACCOUNTS),
            self.workflow_id(self.workflow_of(pair)),
            self.contact_id(contact),
        )

    def enrollments(self, total: int | None = None) -> Iterator[Enrollment]:
        """The main stream's enrollments, then idle contacts' ones up to ``total``."""
        for pair in self.pairs:
            yield self.enrollment(pair)
        remaining = (total or 0) - len(self.pairs)
        k = 0
        while remaining > 0:
            account = k % ACCOUNTS
            contact_id = f"i-{self.run_id}-{k}"
            slots = 2 if k % IDLE_PAIR_EVERY == 0 else 1
            for slot in range(min(slots, remaining)):
                workflow = account * WORKFLOWS_PER_ACCOUNT + slot
                yield Enrollment(
                    f"enr-{self.run_id}-i{k}-{slot}",
                    self.account_id(account),
                    self.workflow_id(workflow),
                    contact_id,
                )
                remaining -= 1
            k += 1

    def enrollment_record(self, e: Enrollment) -> tuple[bytes, bytes]:
        """The ``workflow.enrolled`` record of an enrollment: (key, value)."""
        value = orjson.dumps(
            {
                "event_id": f"en-{e.enrollment_id}",
                "type": "workflow.enrolled",
                "account_id": e.account_id,
                "contact_id": e.contact_id,
                "occurred_at": _ts(self.enrolled_at),
                "data": {"workflow_id": e.workflow_id, "enrollment_id": e.enrollment_id},
            }
        )
        return e.contact_id.encode(), value


class EventStream:
    """Contact events of a world, one at a time, with the mix the module docstring describes.

    ``live`` events occur now (for the latency runs); the others occur one millisecond apart
    from ``world.events_from``.
    """

    def __init__(
        self, world: World, prefix: str, seed: int, achieving_share: float = ACHIEVING_SHARE
    ) -> None:
        self.world = world
        self.prefix = prefix
        self.achieving_share = achieving_share
        self._rng = random.Random(seed)
        self._unachieved = list(world.pairs)
        self._rng.shuffle(self._unachieved)
        self.n = 0
        self.achieving = 0

    def next(self, live: bool = False) -> tuple[str, bytes, bytes, str | None]:
        """One event: (event type, key, value, event id if it achieves a goal else None)."""
        rng, world = self._rng, self.world
        self.n += 1
        n = self.n
        roll = rng.random()
        achieves = False
        if roll < self.achieving_share and self._unachieved:
            pair = self._unachieved.pop()
            workflow = world.workflow_of(pair)
            goal_type, event_type = world.goal_type_of(workflow)
            data = _goal_data(goal_type, f"g{workflow}", n)
            contact = pair // WORKFLOWS_PER_ACCOUNT
            achieves = True
        elif roll < self.achieving_share + NEAR_MISS_SHARE:
            contact, workflow = self._not_enrolled(rng)
            goal_type, event_type = world.goal_type_of(workflow)
            data = _goal_data(goal_type, f"g{workflow}", n)
        else:
            contact = rng.randrange(world.contacts)
            event_type = rng.choice(EVENT_TYPES)
            data = _ordinary_data(rng, event_type, n)
        event_id = f"{self.prefix}-{n}"
        at = datetime.now(UTC) if live else world.events_from + timedelta(milliseconds=n)
        contact_id = world.contact_id(contact)
        value = orjson.dumps(
            {
                "event_id": event_id,
                "type": event_type,
                "account_id": world.account_id(contact % ACCOUNTS),
                "contact_id": contact_id,
                "occurred_at": _ts(at),
                "data": data,
            }
        )
        if achieves:
            self.achieving += 1
        return event_type, contact_id.encode(), value, event_id if achieves else None

    def _not_enrolled(self, rng: random.Random) -> tuple[int, int]:
        """A contact and a workflow of its account in which it is not enrolled."""
        for _ in range(100):
            contact = rng.randrange(self.world.contacts)
            slot = rng.randrange(WORKFLOWS_PER_ACCOUNT)
            if contact * WORKFLOWS_PER_ACCOUNT + slot not in self.world.enrolled:
                return contact, World.workflow_of(contact * WORKFLOWS_PER_ACCOUNT + slot)
        raise RuntimeError("every contact is enrolled everywhere; lower the enrollment count")

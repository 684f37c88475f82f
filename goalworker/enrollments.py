"""Enrollment spans per contact: the worker state that matching reads.

A contact's state maps each enrollment id to the span in which events can achieve it: from
the enrollment's start until its exit. Exited spans stay for a grace window so that an event
which occurred before the exit, but arrives after it, still counts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from goalworker.events import ENROLLED, Event


@dataclass(slots=True)
class Span:
    """When one enrollment was open; ``enrolled_at`` is None while only its exit is known."""

    workflow_id: str
    account_id: str
    enrolled_at: datetime | None
    exited_at: datetime | None = None
    exit_reason: str | None = None
    #: When the worker learned of the exit, in seconds since the epoch; the grace window
    #: runs in processing time, so replaying old exits does not drop them at once.
    exit_seen: float | None = None


class ContactEnrollments(dict[str, Span]):
    """One contact's enrollments by id."""


def is_open_at(span: Span, moment: datetime) -> bool:
    """True when an event at ``moment`` falls within the span: at or after start, before exit."""
    if span.enrolled_at is None or moment < span.enrolled_at:
        return False
    return span.exited_at is None or moment < span.exited_at


def apply(state: ContactEnrollments, event: Event, now: float | None = None) -> bool:
    """Apply an enrolled or exited event to a contact's state; return True if it changed.

    Replays are harmless: applying the same event twice leaves the same state. ``now`` is
    the processing time in seconds since the epoch (default: the clock).
    """
    seen = time.time() if now is None else now
    enrollment_id: str = event.data["enrollment_id"]
    span = state.get(enrollment_id)
    if event.type == ENROLLED:
        if span is None:
            state[enrollment_id] = Span(
                event.data["workflow_id"], event.account_id, event.occurred_at
            )
            return True
        if span.enrolled_at == event.occurred_at:
            return False
        span.enrolled_at = event.occurred_at
        return True

    if span is None:
        # The exit overtook its enrollment (they may travel different partitions upstream).
        state[enrollment_id] = Span(
            event.data["workflow_id"],
            event.account_id,
            None,
            event.occurred_at,
            event.data["reason"],
            seen,
        )
        return True
    if span.exited_at is not None and span.exited_at <= event.occurred_at:
        return False
    span.exited_at = event.occurred_at
    span.exit_reason = event.data["reason"]
    span.exit_seen = seen
    return True


def prune(state: ContactEnrollments, now: float, grace: float) -> bool:
    """Drop spans whose exit was seen over ``grace`` seconds before ``now``; True if any."""
    expired = [
        eid for eid, s in state.items() if s.exit_seen is not None and s.exit_seen + grace < now
    ]
    for enrollment_id in expired:
        del state[enrollment_id]
    return bool(expired)


def to_json(state: ContactEnrollments) -> dict[str, list[Any]]:
    """Encode a contact's state for the changelog topic."""
    return {
        eid: [
            s.workflow_id,
            s.account_id,
            s.enrolled_at.isoformat() if s.enrolled_at else None,
            s.exited_at.isoformat() if s.exited_at else None,
            s.exit_reason,
            s.exit_seen,
        ]
        for eid, s in state.items()
    }


def from_json(raw: dict[str, list[Any]]) -> ContactEnrollments:
    """Decode a contact's state as read back from the changelog topic."""
    return ContactEnrollments(
        (
            eid,
            Span(
                workflow_id,
                account_id,
                datetime.fromisoformat(enrolled) if enrolled else None,
                datetime.fromisoformat(exited) if exited else None,
                reason,
                exit_seen,
            ),
        )
        for eid, (workflow_id, account_id, enrolled, exited, reason, exit_seen) in raw.items()
    )

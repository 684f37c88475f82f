"""Recent contact events, kept for a grace window in case their enrollment arrives later.

Events and enrollments travel on different topics, so an event that occurred after an
enrollment started can be processed before that enrollment. Each contact keeps the events of
the last ``grace`` seconds (of processing time) that meet some active goal of their account;
when an enrollment arrives they are matched against it. Only such events are kept, so the
buffer holds a small share of the stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

#: Most events kept per contact; past it the oldest go first.
MAX_PER_CONTACT = 100


@dataclass(frozen=True, slots=True)
class RecentEvent:
    """A consumed record kept for later matching: where it came from and its original value."""

    received: float  # seconds since the epoch, when the worker consumed it
    topic: str
    partition: int
    offset: int
    value: bytes


def keep(
    recent: list[RecentEvent], event: RecentEvent, now: float, grace: float
) -> list[RecentEvent]:
    """The contact's recent events with ``event`` added and expired or surplus ones gone."""
    kept = [
        r for r in live(recent, now, grace) if r.offset != event.offset or r.topic != event.topic
    ]
    kept.append(event)
    return kept[-MAX_PER_CONTACT:]


def live(recent: list[RecentEvent], now: float, grace: float) -> list[RecentEvent]:
    """The events still within the grace window."""
    return [r for r in recent if r.received + grace >= now]


def to_bytes(recent: list[RecentEvent]) -> bytes:
    """Encode a contact's recent events for the changelog topic."""
    return orjson.dumps(
        [[r.received, r.topic, r.partition, r.offset, r.value.decode()] for r in recent]
    )


def from_bytes(raw: bytes) -> list[RecentEvent]:
    """Decode a contact's recent events as read back from the changelog topic."""
    rows: list[list[Any]] = orjson.loads(raw)
    return [RecentEvent(r, t, p, o, v.encode()) for r, t, p, o, v in rows]

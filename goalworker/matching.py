"""Pure goal matching: which enrollments an event achieves, through an index of active goals.

No I/O here. The index is keyed by account, workflow, goal type and the one criterion that
discriminates most (tag, product, calendar, form, pipeline stage), so the work per event
depends on the contact's enrollments and the goals that could match, never on how many goals
exist in total.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal

from goalworker.enrollments import ACCOUNT_ID, WORKFLOW_ID, Span, is_open_at
from goalworker.events import Event
from goalworker.goals import GOAL_TYPE_OF_EVENT, Goal, GoalType, normalize_name

_IndexKey = tuple[str, ...]
_ANY = "*"


@dataclass(frozen=True, slots=True)
class Match:
    """An enrollment achieved by an event, through one goal."""

    enrollment_id: str
    workflow_id: str
    goal: Goal


@dataclass(frozen=True, slots=True)
class _Indexed:
    goal: Goal
    #: Order among goals an event meets at once: the oldest goal wins, ties by id.
    rank: tuple[float, str]
    min_amount: Decimal | None
    currency: str | None
    status: str | None


def _goal_keys(goal: Goal) -> list[_IndexKey]:
    c = goal.criteria
    match goal.goal_type:
        case GoalType.TAG_ADDED:
            keys: list[_IndexKey] = []
            if "tag_id" in c:
                keys.append(("id", c["tag_id"]))
            if "tag_name" in c:
                keys.append(("name", normalize_name(c["tag_name"])))
            return keys
        case GoalType.PURCHASE_MADE:
            return [("product", p) for p in c.get("product_ids") or ()] or [(_ANY,)]
        case GoalType.APPOINTMENT_BOOKED:
            return [("calendar", c["calendar_id"])] if "calendar_id" in c else [(_ANY,)]
        case GoalType.FORM_SUBMITTED:
            return [(c["form_id"],)]
        case GoalType.PIPELINE_STAGE_REACHED:
            return [(c["pipeline_id"], c["stage_id"])]


def _event_keys(event: Event) -> list[_IndexKey]:
    d = event.data
    match GOAL_TYPE_OF_EVENT[event.type]:
        case GoalType.TAG_ADDED:
            return [("id", d["tag_id"]), ("name", normalize_name(d["tag_name"]))]
        case GoalType.PURCHASE_MADE:
            return [*(("product", p) for p in d["product_ids"]), (_ANY,)]
        case GoalType.APPOINTMENT_BOOKED:
            return [("calendar", d["calendar_id"]), (_ANY,)]
        case GoalType.FORM_SUBMITTED:
            return [(d["form_id"],)]
        case GoalType.PIPELINE_STAGE_REACHED:
            return [(d["pipeline_id"], d["stage_id"])]


def _meets_rest(entry: _Indexed, event: Event) -> bool:
    """Check the criteria the index key does not cover."""
    if entry.min_amount is not None:
        d = event.data
        return bool(d["currency"] == entry.currency and d["amount"] >= entry.min_amount)
    if entry.status is not None:
        return bool(normalize_name(event.data["status"]) == entry.status)
    return True


class GoalIndex:
    """Active goals indexed for constant-time lookup by event."""

    def __init__(self, goals: Iterable[Goal] = ()) -> None:
        self._entries: dict[_IndexKey, list[_Indexed]] = {}
        #: The same entries keyed without the workflow: "could this event matter to anyone?"
        self._by_account: dict[_IndexKey, list[_Indexed]] = {}
        self._count = 0
        for goal in goals:
            self._add(goal)

    def __len__(self) -> int:
        return self._count

    def _add(self, goal: Goal) -> None:
        c = goal.criteria
        entry = _Indexed(
            goal=goal,
            rank=(goal.created_at.timestamp(), str(goal.id)),
            min_amount=Decimal(c["min_amount"]) if "min_amount" in c else None,
            currency=c.get("currency"),
            status=normalize_name(c["status"]) if "status" in c else None,
        )
        prefix = (goal.account_id, goal.workflow_id, goal.goal_type.value)
        account_prefix = (goal.account_id, goal.goal_type.value)
        for key in _goal_keys(goal):
            self._entries.setdefault(prefix + key, []).append(entry)
            self._by_account.setdefault(account_prefix + key, []).append(entry)
        self._count += 1

    def could_achieve(self, event: Event) -> bool:
        """True when the event meets some active goal of its account, in any workflow."""
        prefix = (event.account_id, GOAL_TYPE_OF_EVENT[event.type].value)
        return any(
            _meets_rest(entry, event)
            for key in _event_keys(event)
            for entry in self._by_account.get(prefix + key, ())
        )

    def goals_met(self, account_id: str, workflow_id: str, event: Event) -> Iterator[_Indexed]:
        """Yield the goals of one workflow that the event meets (a goal may repeat)."""
        prefix = (account_id, workflow_id, GOAL_TYPE_OF_EVENT[event.type].value)
        for key in _event_keys(event):
            for entry in self._entries.get(prefix + key, ()):
                if _meets_rest(entry, event):
                    yield entry

    def first_goal_met(self, account_id: str, workflow_id: str, event: Event) -> Goal | None:
        """The goal that wins when an event meets several goals of one workflow at once."""
        best = min(self.goals_met(account_id, workflow_id, event), key=_rank, default=None)
        return None if best is None else best.goal


def _rank(entry: _Indexed) -> tuple[float, str]:
    return entry.rank


def match_event(
    event: Event,
    enrollments: Mapping[str, Span],
    index: GoalIndex,
    achieved: Container[str] = frozenset(),
) -> list[Match]:
    """Return the enrollments of the event's contact that this event achieves.

    An enrollment qualifies when it belongs to the event's account, was open when the event
    occurred (at or after its start, before its exit) and has not achieved a goal already.
    """
    matches = []
    occurred = event.occurred_at
    for enrollment_id, span in enrollments.items():
        if span[ACCOUNT_ID] != event.account_id or enrollment_id in achieved:
            continue
        if not is_open_at(span, occurred):
            continue
        workflow_id = span[WORKFLOW_ID]
        goal = index.first_goal_met(event.account_id, workflow_id, event)
        if goal is not None:
            matches.append(Match(enrollment_id, workflow_id, goal))
    return matches

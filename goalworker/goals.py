"""Goal types and their criteria: one definition for the worker, the database and the API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from goalworker import events
from goalworker.errors import InvalidGoal

Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]


class GoalType(StrEnum):
    """What a contact must do to reach a goal."""

    TAG_ADDED = "tag_added"
    PURCHASE_MADE = "purchase_made"
    APPOINTMENT_BOOKED = "appointment_booked"
    FORM_SUBMITTED = "form_submitted"
    PIPELINE_STAGE_REACHED = "pipeline_stage_reached"


#: The contact-event type that can achieve each goal type.
EVENT_TYPE_OF_GOAL: dict[GoalType, str] = {
    GoalType.TAG_ADDED: events.TAG_ADDED,
    GoalType.PURCHASE_MADE: events.PAYMENT_COMPLETED,
    GoalType.APPOINTMENT_BOOKED: events.APPOINTMENT_BOOKED,
    GoalType.FORM_SUBMITTED: events.FORM_SUBMITTED,
    GoalType.PIPELINE_STAGE_REACHED: events.PIPELINE_STAGE_CHANGED,
}
GOAL_TYPE_OF_EVENT: dict[str, GoalType] = {v: k for k, v in EVENT_TYPE_OF_GOAL.items()}


def normalize_name(name: str) -> str:
    """Tag names match ignoring case and surrounding spaces."""
    return name.strip().casefold()


class _Criteria(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TagAddedCriteria(_Criteria):
    """A tag, by id or by name; when both are given either one matches."""

    tag_id: Id | None = None
    tag_name: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1024)]
        | None
    ) = None

    @model_validator(mode="after")
    def _one_of(self) -> TagAddedCriteria:
        if self.tag_id is None and self.tag_name is None:
            raise ValueError("give tag_id or tag_name")
        return self


class PurchaseMadeCriteria(_Criteria):
    """Any purchase, narrowed by products (any of them) and a minimum amount in a currency."""

    product_ids: list[Id] | None = Field(default=None, max_length=1000)
    min_amount: Decimal | None = Field(default=None, ge=0, max_digits=26, decimal_places=8)
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] | None = None

    @model_validator(mode="after")
    def _amount_has_currency(self) -> PurchaseMadeCriteria:
        if (self.min_amount is None) != (self.currency is None):
            raise ValueError("min_amount and currency go together: give both or neither")
        return self


class AppointmentBookedCriteria(_Criteria):
    """Any booking, narrowed by calendar and by status (status ignores case)."""

    calendar_id: Id | None = None
    status: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1024)]
        | None
    ) = None


class FormSubmittedCriteria(_Criteria):
    """A submission of one form."""

    form_id: Id


class PipelineStageReachedCriteria(_Criteria):
    """An opportunity reaching one stage of one pipeline."""

    pipeline_id: Id
    stage_id: Id


CRITERIA_MODEL: dict[GoalType, type[_Criteria]] = {
    GoalType.TAG_ADDED: TagAddedCriteria,
    GoalType.PURCHASE_MADE: PurchaseMadeCriteria,
    GoalType.APPOINTMENT_BOOKED: AppointmentBookedCriteria,
    GoalType.FORM_SUBMITTED: FormSubmittedCriteria,
    GoalType.PIPELINE_STAGE_REACHED: PipelineStageReachedCriteria,
}


def parse_goal_type(value: object) -> GoalType:
    """Return the goal type named by ``value`` or raise :class:`InvalidGoal`."""
    try:
        return GoalType(str(value))
    except ValueError:
        allowed = ", ".join(t.value for t in GoalType)
        raise InvalidGoal("goal_type", f"{value!r} is not one of {allowed}") from None


def validate_criteria(goal_type: GoalType | str, criteria: object) -> dict[str, Any]:
    """Check criteria against the rules of their goal type; return them normalized as JSON.

    Raises :class:`InvalidGoal` naming the first field at fault and the rule it broke.
    """
    kind = parse_goal_type(goal_type)
    if not isinstance(criteria, dict):
        raise InvalidGoal("criteria", f"must be an object, got {type(criteria).__name__}")
    try:
        model = CRITERIA_MODEL[kind].model_validate(criteria)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in ("criteria", *first["loc"]))
        raise InvalidGoal(where, first["msg"]) from None
    return model.model_dump(mode="json", exclude_none=True)


@dataclass(frozen=True, slots=True)
class Goal:
    """An active goal as the worker caches it."""

    id: UUID
    account_id: str
    workflow_id: str
    goal_type: GoalType
    criteria: dict[str, Any]
    version: int
    created_at: datetime

"""The bodies of the goals API's requests and answers, as its OpenAPI document shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from goalworker.goals import GoalType

#: Largest goal version (the column is a 32-bit integer).
MAX_VERSION = 2**31 - 1


class Problem(BaseModel):
    """The body of every error response."""

    error: str = Field(description="Stable code, e.g. invalid_goal, not_found, version_conflict")
    message: str = Field(description="What went wrong and what to do, in plain words")
    field: str | None = Field(default=None, description="The field at fault, dotted")
    rule: str | None = Field(default=None, description="The rule the field broke")


class GoalCreate(BaseModel):
    """A new goal of a workflow."""

    model_config = ConfigDict(extra="forbid")

    goal_type: str = Field(
        description="What the contact must do",
        json_schema_extra={"enum": [t.value for t in GoalType]},
    )
    criteria: dict[str, Any] = Field(description="The rules of the goal type (see the README)")
    active: bool = True


class GoalChange(BaseModel):
    """A change to a goal's criteria and/or active flag, based on the version last read."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=MAX_VERSION, description="The version the change is based on")
    criteria: dict[str, Any] | None = None
    active: bool | None = None


class Goal(BaseModel):
    """A goal as stored."""

    id: UUID
    account_id: str
    workflow_id: str
    goal_type: str
    criteria: dict[str, Any]
    active: bool
    version: int
    created_at: datetime
    updated_at: datetime
    created_by: str
    updated_by: str


class GoalPage(BaseModel):
    """One page of a workflow's goals, oldest first."""

    items: list[Goal]
    total: int
    offset: int
    limit: int


class GoalTypeConversion(BaseModel):
    """The conversion to the goals of one type."""

    goal_type: str
    achieved: int
    conversion_rate: float | None = Field(description="achieved / enrolled; null if none enrolled")
    average_seconds_to_goal: float | None
    median_seconds_to_goal: float | None


class GoalConversion(BaseModel):
    """The conversion to one goal; a deleted goal keeps its achievements."""

    goal_id: UUID
    goal_type: str
    active: bool | None = Field(description="null once the goal is deleted")
    deleted: bool
    achieved: int
    conversion_rate: float | None = Field(description="achieved / enrolled; null if none enrolled")
    average_seconds_to_goal: float | None
    median_seconds_to_goal: float | None


class WorkflowStats(BaseModel):
    """The conversion of the workflow's enrollments that started in the range, and its split."""

    model_config = ConfigDict(populate_by_name=True)

    workflow_id: str
    since: datetime | None = Field(default=None, alias="from")
    until: datetime | None = Field(default=None, alias="to")
    enrolled: int = Field(description="Enrollments that started in the range")
    achieved: int = Field(description="Those of them that reached a goal")
    conversion_rate: float | None = Field(description="achieved / enrolled; null if none enrolled")
    average_seconds_to_goal: float | None = Field(description="From enrollment to achievement")
    median_seconds_to_goal: float | None
    by_goal_type: list[GoalTypeConversion]
    by_goal: list[GoalConversion]


class Achievement(BaseModel):
    """A recorded achievement: an enrollment that reached a goal."""

    enrollment_id: str
    workflow_id: str
    contact_id: str
    goal_id: UUID
    goal_type: str
    achieved_at: datetime
    trigger_event_id: str
    recorded_at: datetime
    published_at: datetime | None = Field(description="When the exit command was acknowledged")


class AchievementPage(BaseModel):
    """One page of achievements, newest first."""

    items: list[Achievement]
    total: int
    offset: int
    limit: int

"""The goals API's statistics and achievement lists, on known data in the real database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from .goals_api import Api, achieve, enroll, goals_url, new_account

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
FORM = {"goal_type": "form_submitted", "criteria": {"form_id": "f1"}}


def _conversion(row: dict[str, Any]) -> tuple[Any, ...]:
    return (
        row["achieved"],
        row["conversion_rate"],
        row["average_seconds_to_goal"],
        row["median_seconds_to_goal"],
    )


@pytest.fixture
def known_workflow(api: Api, db: sa.Engine) -> dict[str, Any]:
    """Five enrollments an hour apart: four reached a goal (one since deleted), one did not.

    Times to goal: 60 s and 180 s (form), 600 s (tag), 30 s (the deleted appointment goal).
    Rows of another workflow and another account stand beside them and must not count.
    """
    account, other = new_account(), new_account()
    form = api.create_goal(account, "wf", **FORM)
    tag = api.create_goal(account, "wf", "tag_added", {"tag_name": "vip"})
    stage = api.create_goal(
        account, "wf", "pipeline_stage_reached", {"pipeline_id": "p", "stage_id": "s"}
    )
    gone = api.create_goal(account, "wf", "appointment_booked", {})
    assert api.request("DELETE", goals_url("wf", f"/{gone['id']}"), account).status_code == 204
    hour = timedelta(hours=1)
    reached = [(form, 60), (form, 180), (tag, 600), None, (gone, 30)]
    for i, outcome in enumerate(reached):
        enrollment = f"{account}-e{i}"
        enroll(db, account, "wf", enrollment, T0 + i * hour)
        if outcome:
            goal, seconds = outcome
            at = T0 + i * hour + timedelta(seconds=seconds)
            achieve(db, account, "wf", enrollment, goal["id"], goal["goal_type"], at)
    for noise_account, workflow in ((account, "wf-other"), (other, "wf")):
        enrollment = f"{noise_account}-{workflow}-noise"
        enroll(db, noise_account, workflow, enrollment, T0)
        achieve(db, noise_account, workflow, enrollment, form["id"], "form_submitted", T0)
    return {"account": account, "form": form, "tag": tag, "stage": stage, "gone": gone}


def test_stats_count_enrollments_conversions_and_times_to_goal(api: Api, known_workflow):
    w = known_workflow

    response = api.request("GET", goals_url("wf", "/stats"), w["account"])

    assert response.status_code == 200
    stats = response.json()
    assert (stats["workflow_id"], stats["from"], stats["to"]) == ("wf", None, None)
    assert stats["enrolled"] == 5
    assert _conversion(stats) == (4, 0.8, 217.5, 120.0)
    by_type = {row["goal_type"]: _conversion(row) for row in stats["by_goal_type"]}
    assert by_type == {
        "appointment_booked": (1, 0.2, 30.0, 30.0),
        "form_submitted": (2, 0.4, 120.0, 120.0),
        "tag_added": (1, 0.2, 600.0, 600.0),
        "pipeline_stage_reached": (0, 0.0, None, None),
    }
    by_goal = [(r["goal_id"], r["active"], r["deleted"], *_conversion(r)) for r in stats["by_goal"]]
    assert by_goal == [
        (w["form"]["id"], True, False, 2, 0.4, 120.0, 120.0),
        (w["tag"]["id"], True, False, 1, 0.2, 600.0, 600.0),
        (w["stage"]["id"], True, False, 0, 0.0, None, None),
        (w["gone"]["id"], None, True, 1, 0.2, 30.0, 30.0),
    ]


def test_stats_count_only_enrollments_that_started_in_the_time_range(api: Api, known_workflow):
    w = known_workflow
    since, until = T0 + timedelta(hours=1), T0 + timedelta(hours=3)

    stats = api.request(
        "GET",
        goals_url("wf", "/stats"),
        w["account"],
        params={"from": since.isoformat(), "to": until.isoformat()},
    ).json()

    assert (stats["enrolled"], *_conversion(stats)) == (2, 2, 1.0, 390.0, 390.0)
    assert datetime.fromisoformat(stats["from"]) == since
    by_goal = {r["goal_id"]: r["achieved"] for r in stats["by_goal"]}
    assert by_goal == {w["form"]["id"]: 1, w["tag"]["id"]: 1, w["stage"]["id"]: 0}


def test_stats_without_enrollments_have_no_rate_and_no_times(api: Api, known_workflow):
    w = known_workflow
    later = {"from": (T0 + timedelta(days=30)).isoformat()}

    empty_range = api.request("GET", goals_url("wf", "/stats"), w["account"], params=later).json()
    unknown = api.request("GET", goals_url("wf-none", "/stats"), w["account"]).json()

    assert (empty_range["enrolled"], *_conversion(empty_range)) == (0, 0, None, None, None)
    assert {r["conversion_rate"] for r in empty_range["by_goal"]} == {None}
    assert len(empty_range["by_goal"]) == 3
    assert unknown == {
        "workflow_id": "wf-none",
        "from": None,
        "to": None,
        "enrolled": 0,
        "achieved": 0,
        "conversion_rate": None,
        "average_seconds_to_goal": None,
        "median_seconds_to_goal": None,
        "by_goal_type": [],
        "by_goal": [],
    }


@pytest.mark.parametrize(
    "params, field",
    [
        ({"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "to"),
        ({"from": "2026-03-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "to"),
        ({"from": "2026-03-01T00:00:00"}, "from"),
        ({"to": "yesterday"}, "to"),
    ],
)
def test_a_stats_time_range_must_be_zoned_and_in_order(api: Api, params, field):
    response = api.request("GET", goals_url("wf", "/stats"), new_account(), params=params)

    assert response.status_code == 422
    assert response.json()["field"] == field


# -- achievements ----------------------------------------------------------------------------


def test_achievements_are_listed_newest_first_by_workflow_and_by_contact(api: Api, db: sa.Engine):
    account = new_account()
    goal_id = uuid.uuid4()
    made = [("wf-1", "c1", 1), ("wf-2", "c1", 3), ("wf-1", "c2", 2), ("wf-1", "c1", 0)]
    for i, (workflow, contact, minutes) in enumerate(made):
        at = T0 + timedelta(minutes=minutes)
        achieve(db, account, workflow, f"{account}-{i}", goal_id, "form_submitted", at, contact)

    def listed(url: str, **params: int) -> tuple[int, list[str]]:
        page = api.request("GET", url, account, params=params).json()
        return page["total"], [a["enrollment_id"] for a in page["items"]]

    workflow_url, contact_url = (
        "/api/v1/workflows/wf-1/achievements",
        "/api/v1/contacts/c1/achievements",
    )
    assert listed(workflow_url) == (3, [f"{account}-2", f"{account}-0", f"{account}-3"])
    assert listed(workflow_url, offset=1, limit=1) == (3, [f"{account}-0"])
    assert listed(contact_url) == (3, [f"{account}-1", f"{account}-0", f"{account}-3"])
    assert listed(contact_url, offset=3) == (3, [])
    item = api.request("GET", contact_url, account, params={"limit": 1}).json()["items"][0]
    assert item == {
        "enrollment_id": f"{account}-1",
        "workflow_id": "wf-2",
        "contact_id": "c1",
        "goal_id": str(goal_id),
        "goal_type": "form_submitted",
        "achieved_at": item["achieved_at"],
        "trigger_event_id": f"evt-{account}-1",
        "recorded_at": item["recorded_at"],
        "published_at": item["published_at"],
    }
    assert datetime.fromisoformat(item["achieved_at"]) == T0 + timedelta(minutes=3)

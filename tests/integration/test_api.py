"""The goals API on the real database: goal configuration, validation, tokens and tenants."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
import sqlalchemy as sa
from jwt.utils import base64url_encode
from pydantic import SecretStr

from goalworker import storage
from goalworker.api import MAX_OFFSET, MAX_PAGE_SIZE, create_app
from goalworker.errors import AuthNotConfigured, StaleVersion
from goalworker.settings import Settings

from .goals_api import (
    SECRET,
    Api,
    achieve,
    api_settings,
    enroll,
    goals_url,
    new_account,
    running_api,
)

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
FORM = {"goal_type": "form_submitted", "criteria": {"form_id": "f1"}}


# -- goals -----------------------------------------------------------------------------------


def test_a_created_goal_comes_back_with_its_version_times_and_users(api: Api):
    account = new_account()
    body = {"goal_type": "tag_added", "criteria": {"tag_name": "  VIP "}}
    response = api.request("POST", goals_url("wf-1"), account, user="carol", json=body)

    assert response.status_code == 201
    goal = response.json()
    assert goal["account_id"] == account
    assert goal["workflow_id"] == "wf-1"
    assert goal["goal_type"] == "tag_added"
    assert goal["criteria"] == {"tag_name": "VIP"}
    assert goal["active"] is True
    assert goal["version"] == 1
    assert goal["created_by"] == goal["updated_by"] == "carol"
    assert goal["created_at"] == goal["updated_at"]
    assert response.headers["Location"] == goals_url("wf-1", f"/{goal['id']}")
    fetched = api.request("GET", goals_url("wf-1", f"/{goal['id']}"), account)
    assert fetched.status_code == 200
    assert fetched.json() == goal


def test_goals_are_listed_oldest_first_in_pages_with_the_total(api: Api):
    account = new_account()
    ids = [api.create_goal(account, "wf", **FORM)["id"] for _ in range(5)]
    api.create_goal(account, "wf-other", **FORM)

    pages = [
        api.request("GET", goals_url("wf"), account, params={"offset": o, "limit": 2}).json()
        for o in (0, 2, 4, 6)
    ]

    assert [p["total"] for p in pages] == [5, 5, 5, 5]
    assert [[g["id"] for g in p["items"]] for p in pages] == [ids[0:2], ids[2:4], ids[4:], []]
    assert (pages[0]["offset"], pages[0]["limit"]) == (0, 2)
    default = api.request("GET", goals_url("wf"), account).json()
    assert (default["offset"], default["limit"], len(default["items"])) == (0, 50, 5)


@pytest.mark.parametrize(
    "params, field",
    [
        ({"limit": 0}, "limit"),
        ({"limit": MAX_PAGE_SIZE + 1}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"offset": -1}, "offset"),
        ({"offset": MAX_OFFSET + 1}, "offset"),
    ],
)
@pytest.mark.parametrize(
    "url",
    [goals_url("wf"), "/api/v1/workflows/wf/achievements", "/api/v1/contacts/c/achievements"],
)
def test_page_bounds_outside_the_limits_are_refused_naming_the_parameter(
    api: Api, url: str, params: dict[str, Any], field: str
):
    response = api.request("GET", url, new_account(), params=params)

    assert response.status_code == 422
    problem = response.json()
    assert problem["error"] == "invalid_request"
    assert problem["field"] == field
    assert problem["message"].startswith(f"{field}: ")


def test_the_largest_page_is_accepted(api: Api):
    response = api.request("GET", goals_url("wf"), new_account(), params={"limit": MAX_PAGE_SIZE})

    assert response.status_code == 200
    assert response.json()["limit"] == MAX_PAGE_SIZE


def test_a_patch_changes_criteria_and_active_flag_and_bumps_the_version(api: Api):
    account = new_account()
    goal = api.create_goal(account, "wf", **FORM)

    response = api.request(
        "PATCH",
        goals_url("wf", f"/{goal['id']}"),
        account,
        user="dave",
        json={"version": 1, "criteria": {"form_id": " f2 "}, "active": False},
    )

    assert response.status_code == 200
    changed = response.json()
    assert changed["criteria"] == {"form_id": "f2"}
    assert changed["active"] is False
    assert changed["version"] == 2
    assert (changed["created_by"], changed["updated_by"]) == ("alice", "dave")
    assert changed["created_at"] == goal["created_at"]
    assert changed["updated_at"] > goal["updated_at"]
    assert api.request("GET", goals_url("wf", f"/{goal['id']}"), account).json() == changed


def test_a_patch_based_on_a_stale_version_is_a_conflict_and_changes_nothing(api: Api):
    account = new_account()
    goal = api.create_goal(account, "wf", **FORM)
    url = goals_url("wf", f"/{goal['id']}")
    first = api.request("PATCH", url, account, json={"version": 1, "active": False})
    assert first.status_code == 200

    second = api.request(
        "PATCH", url, account, user="eve", json={"version": 1, "criteria": {"form_id": "f9"}}
    )

    assert second.status_code == 409
    problem = second.json()
    assert problem["error"] == "version_conflict"
    assert problem["field"] == "version"
    assert "version 2" in problem["message"]
    assert api.request("GET", url, account).json() == first.json()


def test_a_patch_from_a_version_the_goal_never_had_is_a_conflict(api: Api):
    account = new_account()
    goal = api.create_goal(account, "wf", **FORM)
    url = goals_url("wf", f"/{goal['id']}")

    response = api.request("PATCH", url, account, json={"version": 7, "active": False})

    assert response.status_code == 409
    assert api.request("GET", url, account).json() == goal


def test_of_two_concurrent_changes_from_one_version_exactly_one_wins(
    api: Api, base_settings: Settings
):
    account = new_account()
    goal = api.create_goal(account, "wf", **FORM)
    goal_id = uuid.UUID(goal["id"])

    async def race() -> list[Any]:
        engine = storage.make_engine(base_settings.database_url)
        try:
            return await asyncio.gather(
                *(
                    storage.update_goal(
                        engine,
                        account,
                        "wf",
                        goal_id,
                        version=1,
                        changes={"criteria": {"form_id": f"by-{user}"}},
                        user_id=user,
                    )
                    for user in ("ann", "bob", "cid", "dee")
                ),
                return_exceptions=True,
            )
        finally:
            await engine.dispose()

    outcomes = asyncio.run(race())

    winners = [o for o in outcomes if isinstance(o, dict)]
    assert len(winners) == 1
    assert all(isinstance(o, StaleVersion) and o.current == 2 for o in outcomes if o not in winners)
    stored = api.request("GET", goals_url("wf", f"/{goal_id}"), account).json()
    assert stored["version"] == 2
    assert stored["criteria"] == {"form_id": f"by-{winners[0]['updated_by']}"}


@pytest.mark.parametrize(
    "body, field, rule",
    [
        ({"version": 1, "criteria": {}}, "criteria.form_id", "Field required"),
        ({"version": 1, "criteria": {"form_id": ""}}, "criteria.form_id", "at least 1"),
        ({"version": 1}, "body", "give criteria, active or both"),
        ({"version": 1, "goal_type": "tag_added"}, "goal_type", "Extra inputs"),
        ({"active": False}, "version", "Field required"),
        ({"version": 0, "active": False}, "version", "greater than or equal to 1"),
        ({"version": 1, "active": "maybe"}, "active", "valid boolean"),
    ],
)
def test_an_invalid_patch_is_refused_naming_the_field_and_changes_nothing(
    api: Api, body: dict[str, Any], field: str, rule: str
):
    account = new_account()
    goal = api.create_goal(account, "wf", **FORM)
    url = goals_url("wf", f"/{goal['id']}")

    response = api.request("PATCH", url, account, json=body)

    assert response.status_code == 422
    problem = response.json()
    assert problem["field"] == field
    assert rule in problem["rule"]
    assert api.request("GET", url, account).json() == goal


def test_deleting_a_goal_answers_204_and_keeps_its_achievements(api: Api, db: sa.Engine):
    account = new_account()
    goal = api.create_goal(account, "wf", **FORM)
    enroll(db, account, "wf", f"{account}-e1", T0)
    achieve(db, account, "wf", f"{account}-e1", goal["id"], "form_submitted", T0)
    url = goals_url("wf", f"/{goal['id']}")

    response = api.request("DELETE", url, account)

    assert response.status_code == 204
    assert response.content == b""
    assert api.request("GET", url, account).status_code == 404
    assert api.request("DELETE", url, account).status_code == 404
    kept = api.request("GET", "/api/v1/workflows/wf/achievements", account).json()
    assert [a["goal_id"] for a in kept["items"]] == [goal["id"]]


def test_the_stats_route_is_not_mistaken_for_a_goal_id(api: Api):
    response = api.request("GET", goals_url("wf", "/stats"), new_account())

    assert response.status_code == 200
    assert response.json()["workflow_id"] == "wf"


def test_an_unknown_goal_is_404_and_a_malformed_goal_id_is_422(api: Api):
    account = new_account()

    missing = api.request("GET", goals_url("wf", f"/{uuid.uuid4()}"), account)
    malformed = api.request("GET", goals_url("wf", "/not-a-uuid"), account)

    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
    assert missing.json()["field"] == "goal_id"
    assert malformed.status_code == 422
    assert malformed.json()["field"] == "goal_id"


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, field, rule",
    [
        ({"goal_type": "bogus", "criteria": {}}, "goal_type", "is not one of"),
        ({"criteria": {"form_id": "f"}}, "goal_type", "Field required"),
        ({"goal_type": "form_submitted"}, "criteria", "Field required"),
        ({"goal_type": "form_submitted", "criteria": []}, "criteria", "valid dictionary"),
        ({"goal_type": "form_submitted", "criteria": {}}, "criteria.form_id", "Field required"),
        (
            {"goal_type": "form_submitted", "criteria": {"form_id": "f", "colour": "red"}},
            "criteria.colour",
            "Extra inputs are not permitted",
        ),
        ({**FORM, "colour": "red"}, "colour", "Extra inputs are not permitted"),
        ({"goal_type": "tag_added", "criteria": {}}, "criteria", "give tag_id or tag_name"),
        (
            {"goal_type": "purchase_made", "criteria": {"min_amount": "5"}},
            "criteria",
            "min_amount and currency go together",
        ),
        (
            {"goal_type": "purchase_made", "criteria": {"min_amount": "5", "currency": "usd"}},
            "criteria.currency",
            "pattern",
        ),
        (
            {"goal_type": "purchase_made", "criteria": {"min_amount": "-1", "currency": "USD"}},
            "criteria.min_amount",
            "greater than or equal to 0",
        ),
        (
            {"goal_type": "pipeline_stage_reached", "criteria": {"pipeline_id": "p"}},
            "criteria.stage_id",
            "Field required",
        ),
        (
            {"goal_type": "form_submitted", "criteria": {"form_id": "f\x00"}},
            "criteria.form_id",
            "NUL",
        ),
        ({**FORM, "active": "yes please"}, "active", "valid boolean"),
    ],
)
def test_an_invalid_goal_is_refused_naming_the_field_and_the_rule(
    api: Api, body: dict[str, Any], field: str, rule: str
):
    account = new_account()

    response = api.request("POST", goals_url("wf"), account, json=body)

    assert response.status_code == 422
    problem = response.json()
    assert problem["error"] in ("invalid_goal", "invalid_request")
    assert problem["field"] == field
    assert rule in problem["rule"]
    assert problem["message"].startswith(f"{field}: ")
    assert api.request("GET", goals_url("wf"), account).json()["total"] == 0


def test_a_body_that_is_not_json_is_refused_as_invalid(api: Api):
    response = api.request(
        "POST",
        goals_url("wf"),
        new_account(),
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 422
    assert response.json()["field"] == "body"


# -- tokens ----------------------------------------------------------------------------------

PROTECTED = [
    ("POST", goals_url("wf")),
    ("GET", goals_url("wf")),
    ("GET", goals_url("wf", "/stats")),
    ("GET", goals_url("wf", f"/{uuid.uuid4()}")),
    ("PATCH", goals_url("wf", f"/{uuid.uuid4()}")),
    ("DELETE", goals_url("wf", f"/{uuid.uuid4()}")),
    ("GET", "/api/v1/workflows/wf/achievements"),
    ("GET", "/api/v1/contacts/c/achievements"),
]


@pytest.mark.parametrize("method, url", PROTECTED)
def test_every_route_but_health_refuses_a_request_without_a_token(api: Api, method: str, url: str):
    response = api.client.request(method, url, json={"version": 1, "active": True})

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"] == "unauthorized"


def _claims(account: str = "acct", **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "alice", "account_id": account, "iat": now, "exp": now + 600} | changes


@pytest.mark.parametrize(
    "authorization, reason",
    [
        (f"Bearer {jwt.encode(_claims(exp=int(time.time()) - 5), SECRET)}", "expired"),
        (f"Bearer {jwt.encode(_claims(), 'another-secret-of-the-same-size-0123456')}", "signature"),
        (f"Bearer {jwt.encode(_claims(), None, algorithm='none')}", "not signed with HS256"),
        (f"Bearer {jwt.encode(_claims(account=''), SECRET)}", "'account_id'"),
        (f"Bearer {jwt.encode({'sub': 'a', 'account_id': 'x'}, SECRET)}", "'exp'"),
        (f"Bearer {jwt.encode(_claims(aud='elsewhere'), SECRET)}", "audience"),
        ("Bearer not-a-jwt", "not a valid JWT"),
        ("Basic YWxpY2U6c2VjcmV0", "no bearer token"),
        ("Bearer", "no bearer token"),
    ],
)
def test_an_expired_forged_or_malformed_token_is_refused(api: Api, authorization: str, reason: str):
    response = api.client.get(goals_url("wf"), headers={"Authorization": authorization})

    assert response.status_code == 401
    assert reason in response.json()["message"]


def test_a_token_whose_account_was_rewritten_is_refused(api: Api):
    header, _, signature = api.token("acct-a").split(".")
    payload = base64url_encode(json.dumps(_claims("acct-b")).encode()).decode()

    response = api.client.get(
        goals_url("wf"), headers={"Authorization": f"Bearer {header}.{payload}.{signature}"}
    )

    assert response.status_code == 401
    assert "signature" in response.json()["message"]


def test_health_checks_need_no_token(api: Api):
    assert api.client.get("/healthz").json() == {"status": "ok"}
    ready = api.client.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})


def test_readiness_fails_with_503_when_the_database_does_not_answer(base_settings: Settings):
    # Port 1 on loopback: nothing listens there, so connecting fails at once.
    unreachable = base_settings.model_copy(
        update={"database_url": "postgresql+psycopg://goalworker:x@127.0.0.1:1/goalworker"}
    )
    with running_api(unreachable) as api:
        ready = api.client.get("/readyz")
        listed = api.request("GET", goals_url("wf"), new_account())
        alive = api.client.get("/healthz")

    assert ready.status_code == 503
    assert ready.json()["error"] == "database_unavailable"
    assert listed.status_code == 503
    assert listed.headers["Retry-After"] == "1"
    assert alive.status_code == 200


def test_the_api_does_not_start_without_a_token_key(base_settings: Settings):
    no_secret = api_settings(base_settings).model_copy(update={"jwt_secret": SecretStr("")})

    with pytest.raises(AuthNotConfigured, match="GOALWORKER_JWT_SECRET"):
        create_app(no_secret)


# -- tenants ---------------------------------------------------------------------------------


def test_another_accounts_goal_is_404_and_never_changed(api: Api):
    owner, other = new_account(), new_account()
    goal = api.create_goal(owner, "wf", **FORM)
    url = goals_url("wf", f"/{goal['id']}")

    read = api.request("GET", url, other)
    patched = api.request("PATCH", url, other, json={"version": 1, "active": False})
    patched_criteria = api.request(
        "PATCH", url, other, json={"version": 1, "criteria": {"form_id": "x"}}
    )
    deleted = api.request("DELETE", url, other)
    listed = api.request("GET", goals_url("wf"), other).json()

    assert [r.status_code for r in (read, patched, patched_criteria, deleted)] == [404] * 4
    assert listed == {"items": [], "total": 0, "offset": 0, "limit": 50}
    assert api.request("GET", url, owner).json() == goal


def test_a_goal_is_reachable_only_under_its_own_workflow(api: Api):
    account = new_account()
    goal = api.create_goal(account, "wf-a", **FORM)

    assert api.request("GET", goals_url("wf-b", f"/{goal['id']}"), account).status_code == 404
    assert (
        api.request(
            "PATCH",
            goals_url("wf-b", f"/{goal['id']}"),
            account,
            json={"version": 1, "active": False},
        ).status_code
        == 404
    )


def test_another_accounts_statistics_and_achievements_are_never_visible(api: Api, db: sa.Engine):
    owner, other = new_account(), new_account()
    goal = api.create_goal(owner, "wf", **FORM)
    enroll(db, owner, "wf", f"{owner}-e1", T0)
    achieve(db, owner, "wf", f"{owner}-e1", goal["id"], "form_submitted", T0, contact="c1")

    stats = api.request("GET", goals_url("wf", "/stats"), other).json()
    by_workflow = api.request("GET", "/api/v1/workflows/wf/achievements", other).json()
    by_contact = api.request("GET", "/api/v1/contacts/c1/achievements", other).json()

    assert (stats["enrolled"], stats["achieved"], stats["by_goal"]) == (0, 0, [])
    assert by_workflow["total"] == by_contact["total"] == 0
    owners = api.request("GET", "/api/v1/contacts/c1/achievements", owner).json()
    assert owners["total"] == 1

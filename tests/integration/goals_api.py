"""The goals API in process on the real database, tokens for any account, worker-like rows."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient
from pydantic import SecretStr

from goalworker import storage
from goalworker.api import create_app
from goalworker.auth import mint_token
from goalworker.settings import Settings

#: The HS256 secret of the tests' API; tokens signed with anything else are forged.
SECRET = "tests-only-secret-" + "0123456789abcdef" * 2


def new_account() -> str:
    return f"api-{uuid.uuid4().hex[:10]}"


class Api:
    """A client of the in-process API that signs its requests as a chosen account and user."""

    def __init__(self, client: TestClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings

    def token(self, account: str, user: str = "alice", ttl_seconds: int = 600) -> str:
        return mint_token(self.settings, account, user, ttl_seconds)

    def auth(self, account: str, user: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(account, user)}"}

    def request(self, method: str, url: str, account: str, user: str = "alice", **kw: Any) -> Any:
        headers = self.auth(account, user) | kw.pop("headers", {})
        return self.client.request(method, url, headers=headers, **kw)

    def create_goal(
        self, account: str, workflow: str, goal_type: str, criteria: dict[str, Any], **kw: Any
    ) -> dict[str, Any]:
        body = {"goal_type": goal_type, "criteria": criteria, **kw}
        response = self.request("POST", f"/api/v1/workflows/{workflow}/goals", account, json=body)
        assert response.status_code == 201, response.text
        goal: dict[str, Any] = response.json()
        return goal


def api_settings(base: Settings) -> Settings:
    return base.model_copy(update={"jwt_algorithm": "HS256", "jwt_secret": SecretStr(SECRET)})


@contextmanager
def running_api(base: Settings) -> Iterator[Api]:
    """The API app with its lifespan started (engine open) for the duration of the block."""
    settings = api_settings(base)
    with TestClient(create_app(settings)) as client:
        yield Api(client, settings)


def goals_url(workflow: str, suffix: str = "") -> str:
    return f"/api/v1/workflows/{workflow}/goals{suffix}"


def enroll(db: sa.Engine, account: str, workflow: str, enrollment: str, at: datetime) -> None:
    row = {
        "enrollment_id": enrollment,
        "account_id": account,
        "workflow_id": workflow,
        "contact_id": f"contact-{enrollment}",
        "enrolled_at": at,
        "status": "active",
    }
    with db.begin() as conn:
        conn.execute(sa.insert(storage.enrollments), [row])


def achieve(
    db: sa.Engine,
    account: str,
    workflow: str,
    enrollment: str,
    goal_id: Any,
    goal_type: str,
    at: datetime,
    contact: str | None = None,
) -> None:
    """Record an achievement as the worker would, its exit command already published."""
    row = {
        "enrollment_id": enrollment,
        "account_id": account,
        "workflow_id": workflow,
        "contact_id": contact or f"contact-{enrollment}",
        "goal_id": goal_id,
        "goal_type": goal_type,
        "achieved_at": at,
        "trigger_event_id": f"evt-{enrollment}",
        "trigger_event": {},
        "command_id": storage.command_id_for(account, enrollment),
        # Published, so no worker's sweep sends an exit command for this made-up row.
        "published_at": at,
    }
    with db.begin() as conn:
        conn.execute(sa.insert(storage.achievements), [row])

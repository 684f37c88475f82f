"""Goals changed through the API reach a worker that is already running, without a restart."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest

from .conftest import T0, Harness, wait_until
from .goals_api import new_account, running_api

pytestmark = pytest.mark.integration

#: Seconds between two submissions while waiting for the worker to pick up a goal change.
RESEND_SECONDS = 0.5


def submitting(harness: Harness, account: str, contact: str, form: str) -> Callable[[], bool]:
    """A check for wait_until: has the contact achieved? If not, submit ``form`` (again)."""
    last_sent = 0.0

    def check() -> bool:
        nonlocal last_sent
        if any(a["contact_id"] == contact for a in harness.achievements(account)):
            return True
        if time.monotonic() - last_sent >= RESEND_SECONDS:
            submit(harness, account, contact, form)
            last_sent = time.monotonic()
        return False

    return check


def submit(harness: Harness, account: str, contact: str, form: str) -> None:
    data = {"form_id": form, "submission_id": f"s-{uuid.uuid4().hex[:8]}"}
    harness.send(
        harness.settings.topic_form_submitted,
        harness.envelope("form.submitted", account, contact, T0 + timedelta(minutes=1), data),
    )


def goal_of(harness: Harness, account: str, contact: str) -> str:
    [row] = [a for a in harness.achievements(account) if a["contact_id"] == contact]
    return str(row["goal_id"])


def test_a_goal_created_through_the_api_is_achieved_and_once_deactivated_is_not(
    harness: Harness,
):
    account = new_account()
    with running_api(harness.settings) as api:
        harness.enroll(account, "c-first", "wf", f"{account}-first")

        created = api.create_goal(account, "wf", "form_submitted", {"form_id": "f-live"})

        wait_until(
            submitting(harness, account, "c-first", "f-live"),
            what="the running worker to achieve the goal created through the API",
        )
        assert goal_of(harness, account, "c-first") == created["id"]

        deactivated = api.request(
            "PATCH",
            f"/api/v1/workflows/wf/goals/{created['id']}",
            account,
            json={"version": created["version"], "active": False},
        )
        assert deactivated.status_code == 200
        # A goal created after the deactivation: once the worker achieves it, the worker has
        # reloaded the goals since the deactivation, so it cannot still hold the old state.
        later = api.create_goal(account, "wf", "form_submitted", {"form_id": "f-later"})
        harness.enroll(account, "c-probe", "wf", f"{account}-probe")
        wait_until(
            submitting(harness, account, "c-probe", "f-later"),
            what="the running worker to load the goals changed after the deactivation",
        )

        harness.enroll(account, "c-after", "wf", f"{account}-after")
        # Same topic and key, so one partition: the worker sees f-live first. Had the
        # deactivated goal matched it, the enrollment's one achievement would be that goal's.
        submit(harness, account, "c-after", "f-live")
        submit(harness, account, "c-after", "f-later")
        wait_until(
            lambda: any(a["contact_id"] == "c-after" for a in harness.achievements(account)),
            what="the contact's later submission to be processed",
        )

    assert goal_of(harness, account, "c-probe") == later["id"]
    assert goal_of(harness, account, "c-after") == later["id"]
    assert {a["goal_id"] for a in harness.achievements(account)} == {
        uuid.UUID(created["id"]),
        uuid.UUID(later["id"]),
    }

"""The worker end to end: real events through Kafka, achievements in PostgreSQL, exits published."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import orjson
import pytest
import sqlalchemy as sa

from goalworker import storage
from goalworker.exits import DLQ_EVENT_ID, DLQ_OFFSET, DLQ_PARTITION, DLQ_REASON, DLQ_TOPIC
from goalworker.storage import command_id_for

from .conftest import T0, Harness, wait_until

pytestmark = pytest.mark.integration


def new_account() -> str:
    return f"acct-{uuid.uuid4().hex[:10]}"


def later(minutes: float):
    return T0 + timedelta(minutes=minutes)


def test_goals_of_every_type_are_achieved_and_their_exit_commands_published(harness: Harness):
    account = new_account()
    s = harness.settings
    cases = [
        (
            "tag_added",
            {"tag_name": "VIP"},
            s.topic_tag_added,
            "contact.tag.added",
            {"tag_id": "t1", "tag_name": "  vip "},
        ),
        (
            "purchase_made",
            {"min_amount": "49.90", "currency": "USD"},
            s.topic_payment_completed,
            "payment.completed",
            {"payment_id": "p", "amount": "49.90", "currency": "USD", "product_ids": []},
        ),
        (
            "appointment_booked",
            {"status": "confirmed"},
            s.topic_appointment_booked,
            "appointment.booked",
            {"appointment_id": "a", "calendar_id": "c", "status": "Confirmed"},
        ),
        (
            "form_submitted",
            {"form_id": "f1"},
            s.topic_form_submitted,
            "form.submitted",
            {"form_id": "f1", "submission_id": "s1"},
        ),
        (
            "pipeline_stage_reached",
            {"pipeline_id": "p1", "stage_id": "won"},
            s.topic_pipeline_stage_changed,
            "pipeline.stage.changed",
            {"opportunity_id": "o", "pipeline_id": "p1", "stage_id": "won"},
        ),
    ]
    goal_ids = harness.add_goals(*[(account, f"wf-{t}", t, c) for t, c, *_ in cases])
    sent = {}
    for (goal_type, _, topic, event_type, data), goal_id in zip(cases, goal_ids, strict=True):
        contact = f"c-{goal_type}"
        harness.enroll(account, contact, f"wf-{goal_type}", f"enr-{account}-{goal_type}")
        sent[goal_type] = (
            goal_id,
            contact,
            harness.send(topic, harness.envelope(event_type, account, contact, later(5), data)),
        )

    commands = wait_until(
        lambda: len(harness.exit_commands(account)) >= 5 and harness.exit_commands(account),
        what="5 exit commands",
    )
    # Marked published with the next transaction, or by the worker's timer within a second.
    rows = wait_until(
        lambda: (
            (rows := harness.achievements(account))
            and len(rows) == 5
            and all(r["published_at"] for r in rows)
            and rows
        ),
        timeout=10,
        what="5 achievements marked published",
    )

    by_type = {r["goal_type"]: r for r in rows}
    assert set(by_type) == set(sent)
    for goal_type, (goal_id, contact, event) in sent.items():
        row = by_type[goal_type]
        assert row["goal_id"] == goal_id
        assert row["contact_id"] == contact
        assert row["trigger_event_id"] == event["event_id"]
        assert row["achieved_at"] == later(5)
        assert row["published_at"] is not None
        assert row["command_id"] == command_id_for(account, row["enrollment_id"])
    purchase = by_type["purchase_made"]["trigger_event"]
    assert purchase["data"]["amount"] == "49.90"  # stored as the decimal string it arrived as
    assert purchase["topic"] == s.topic_payment_completed

    assert len(commands) == 5
    for command in commands:
        row = next(r for r in rows if r["enrollment_id"] == command["enrollment_id"])
        assert command["_key"] == row["contact_id"].encode()
        assert command == {
            "_key": command["_key"],
            "command_id": str(row["command_id"]),
            "type": "workflow.exit",
            "reason": "goal_achieved",
            "account_id": account,
            "workflow_id": row["workflow_id"],
            "enrollment_id": row["enrollment_id"],
            "contact_id": row["contact_id"],
            "goal_id": str(row["goal_id"]),
            "goal_type": row["goal_type"],
            "achieved_at": later(5).isoformat().replace("+00:00", "Z"),
            "trigger_event_id": row["trigger_event_id"],
        }
    projection = harness.enrollment_row(f"enr-{account}-form_submitted")
    assert projection["status"] == "active" and projection["enrolled_at"] == T0


def test_bad_records_go_to_the_dead_letter_topic_and_the_stream_goes_on(harness: Harness):
    account = new_account()
    s = harness.settings
    harness.add_goals((account, "wf", "tag_added", {"tag_id": "t1"}))
    harness.enroll(account, "c1", "wf", f"enr-{account}")
    good = harness.envelope(
        "contact.tag.added", account, "c1", later(1), {"tag_id": "t1", "tag_name": "x"}
    )
    marker = f"bad-{uuid.uuid4().hex}"
    bad = [
        (b"c1", b'{"event_id": "' + marker.encode() + b'", oops', "not valid UTF-8 JSON"),
        (b"c1", b"\xff" + marker.encode(), "not valid UTF-8 JSON"),
        (
            b"c1",
            orjson.dumps(good | {"event_id": marker + "-1", "data": {"tag_id": "t1"}}),
            "'data.tag_name' is required",
        ),
        (
            b"other",
            orjson.dumps(good | {"event_id": marker + "-2"}),
            "does not match field 'contact_id'",
        ),
        (
            b"c1",
            orjson.dumps(good | {"event_id": marker + "-3", "type": "contact.tag.removed"}),
            "unknown event type",
        ),
        (
            b"c1",
            orjson.dumps(good | {"event_id": marker + "-4", "occurred_at": "2026-01-01 10:00"}),
            "UTC offset",
        ),
    ]
    harness.produce(*[(s.topic_tag_added, key, value) for key, value, _ in bad])
    harness.send(s.topic_tag_added, good)

    wait_until(
        lambda: harness.achievements(account), what="the valid event after the bad ones to achieve"
    )
    dead = wait_until(
        lambda: [d for d in harness.dead_letters() if marker.encode() in (d.value or b"")],
        what="dead-letter records",
    )
    assert len(dead) == len(bad)
    by_value = {d.value: d for d in dead}
    for key, value, words in bad:
        record = by_value[value]  # the original bytes, unchanged
        assert record.key == key
        assert words in record.headers[DLQ_REASON].decode()
        assert record.headers[DLQ_TOPIC].decode() == s.topic_tag_added
        assert int(record.headers[DLQ_PARTITION]) >= 0
        assert int(record.headers[DLQ_OFFSET]) >= 0
    assert by_value[bad[2][1]].headers[DLQ_EVENT_ID].decode() == marker + "-1"


def test_a_redelivered_event_changes_nothing(harness: Harness):
    account = new_account()
    s = harness.settings
    harness.add_goals(
        (account, "wf", "tag_added", {"tag_id": "t1"}),
        (account, "wf-sentinel", "tag_added", {"tag_id": "sentinel"}),
    )
    harness.enroll(account, "c1", "wf", f"enr-{account}")
    event = harness.tag(account, "c1", "x", later(1), tag_id="t1")
    wait_until(lambda: harness.achievements(account), what="the first achievement")

    # The same event again, as a producer retry would send it, then a sentinel behind it.
    harness.send(s.topic_tag_added, event)
    harness.enroll(account, "c1", "wf-sentinel", f"enr-{account}-sentinel")
    wait_until(
        lambda: harness.enrollment_row(f"enr-{account}-sentinel"), what="the sentinel enrollment"
    )
    harness.tag(account, "c1", "x", later(2), tag_id="sentinel")
    wait_until(lambda: len(harness.achievements(account)) == 2, what="the sentinel achievement")

    rows = harness.achievements(account)
    assert [r["enrollment_id"] for r in rows].count(f"enr-{account}") == 1
    commands = wait_until(
        lambda: len(harness.exit_commands(account)) >= 2 and harness.exit_commands(account),
        what="exit commands",
    )
    assert [c["enrollment_id"] for c in commands].count(f"enr-{account}") == 1


def test_a_contact_who_exited_before_the_event_does_not_achieve(harness: Harness):
    account = new_account()
    harness.add_goals(
        (account, "wf", "tag_added", {"tag_id": "t1"}),
        (account, "wf-sentinel", "tag_added", {"tag_id": "sentinel"}),
    )
    harness.enroll(account, "c1", "wf", f"enr-{account}", at=T0)
    harness.exit(account, "c1", "wf", f"enr-{account}", at=later(10))
    harness.enroll(account, "c1", "wf-sentinel", f"enr-{account}-sentinel", at=T0)
    wait_until(
        lambda: (
            (row := harness.enrollment_row(f"enr-{account}"))
            and row["status"] == "exited"
            and harness.enrollment_row(f"enr-{account}-sentinel")
        ),
        what="the exit and the sentinel enrollment",
    )
    harness.tag(account, "c1", "x", later(11), tag_id="t1")  # after the exit
    harness.tag(account, "c1", "x", T0 - timedelta(minutes=1), tag_id="t1")  # before the start
    harness.tag(account, "c1", "x", later(12), tag_id="sentinel")
    wait_until(lambda: harness.achievements(account), what="the sentinel achievement")

    rows = harness.achievements(account)
    assert [r["workflow_id"] for r in rows] == ["wf-sentinel"]
    exited = harness.enrollment_row(f"enr-{account}")
    assert exited["exited_at"] == later(10) and exited["exit_reason"] == "manual"


def test_two_goals_on_one_workflow_yield_one_achievement(harness: Harness):
    account = new_account()
    s = harness.settings
    tag_goal, form_goal = harness.add_goals(
        (account, "wf", "tag_added", {"tag_id": "t1"}),
        (account, "wf", "form_submitted", {"form_id": "f1"}),
    )
    harness.enroll(account, "c1", "wf", f"enr-{account}")
    harness.tag(account, "c1", "x", later(1), tag_id="t1")
    wait_until(lambda: harness.achievements(account), what="the first goal")
    harness.send(
        s.topic_form_submitted,
        harness.envelope(
            "form.submitted", account, "c1", later(2), {"form_id": "f1", "submission_id": "s"}
        ),
    )
    harness.add_goals((account, "wf-sentinel", "form_submitted", {"form_id": "f-sentinel"}))
    harness.enroll(account, "c1", "wf-sentinel", f"enr-{account}-sentinel")
    wait_until(
        lambda: harness.enrollment_row(f"enr-{account}-sentinel"), what="the sentinel enrollment"
    )
    harness.send(
        s.topic_form_submitted,
        harness.envelope(
            "form.submitted",
            account,
            "c1",
            later(3),
            {"form_id": "f-sentinel", "submission_id": "s"},
        ),
    )
    wait_until(lambda: len(harness.achievements(account)) == 2, what="the sentinel achievement")

    [row] = [r for r in harness.achievements(account) if r["workflow_id"] == "wf"]
    assert row["goal_id"] == tag_goal  # the goal met first wins
    commands = wait_until(
        lambda: len(harness.exit_commands(account)) >= 2 and harness.exit_commands(account),
        what="exits",
    )
    assert [c["workflow_id"] for c in commands].count("wf") == 1
    assert form_goal != tag_goal


def test_an_achievement_recorded_but_never_published_is_published_on_replay(harness: Harness):
    account = new_account()
    [goal_id] = harness.add_goals((account, "wf", "purchase_made", {}))
    enrollment = f"enr-{account}"
    harness.enroll(account, "c1", "wf", enrollment)
    wait_until(lambda: harness.enrollment_row(enrollment), what="the enrollment")
    # As if a worker had crashed after the insert and before the publish:
    event = harness.envelope(
        "payment.completed",
        account,
        "c1",
        later(3),
        {"payment_id": "p", "amount": "1.00", "currency": "EUR", "product_ids": []},
    )
    with harness.engine.begin() as conn:
        conn.execute(
            sa.insert(storage.achievements).values(
                enrollment_id=enrollment,
                account_id=account,
                workflow_id="wf",
                contact_id="c1",
                goal_id=goal_id,
                goal_type="purchase_made",
                achieved_at=later(3),
                trigger_event_id=event["event_id"],
                trigger_event={"replayed": True},
                command_id=command_id_for(account, enrollment),
            )
        )
    harness.send(harness.settings.topic_payment_completed, event)

    wait_until(
        lambda: harness.achievements(account)[0]["published_at"] is not None, what="the publish"
    )
    [command] = wait_until(lambda: harness.exit_commands(account), what="the exit command")
    assert command["command_id"] == str(command_id_for(account, enrollment))
    [row] = harness.achievements(account)
    assert row["trigger_event"] == {"replayed": True}  # the first record stands
    assert Decimal("1.00") == Decimal(event["data"]["amount"])


def test_an_event_processed_before_its_enrollment_still_achieves_it(harness: Harness):
    account = new_account()
    harness.add_goals((account, "wf", "tag_added", {"tag_id": "t1"}))
    # The event occurred after the enrollment started, but the worker sees it first.
    event = harness.tag(account, "c1", "x", later(5), tag_id="t1")
    too_early = harness.tag(account, "c2", "x", later(1), tag_id="t1")
    wait_until(lambda: _processed(harness, too_early), what="the events to be processed")
    harness.enroll(account, "c1", "wf", f"enr-{account}-1", at=later(2))
    harness.enroll(account, "c2", "wf", f"enr-{account}-2", at=later(2))  # after its event

    [row] = wait_until(
        lambda: harness.achievements(account), what="the late enrollment's achievement"
    )
    assert row["enrollment_id"] == f"enr-{account}-1"
    assert row["trigger_event_id"] == event["event_id"]
    assert row["trigger_event"]["topic"] == harness.settings.topic_tag_added
    assert [c["enrollment_id"] for c in harness.exit_commands(account)] == [f"enr-{account}-1"]


def test_an_exit_that_arrives_first_still_lets_an_earlier_event_achieve(harness: Harness):
    account = new_account()
    harness.add_goals((account, "wf", "tag_added", {"tag_id": "t1"}))
    harness.enroll(account, "c1", "wf", f"enr-{account}-1", at=T0)
    harness.enroll(account, "c2", "wf", f"enr-{account}-2", at=T0)
    harness.exit(account, "c1", "wf", f"enr-{account}-1", at=later(10))
    harness.exit(account, "c2", "wf", f"enr-{account}-2", at=later(10))
    wait_until(
        lambda: all(
            harness.enrollment_row(f"enr-{account}-{i}")["status"] == "exited" for i in (1, 2)
        ),
        what="both exits",
    )
    before = harness.tag(account, "c1", "x", later(9), tag_id="t1")
    after = harness.tag(account, "c2", "x", later(11), tag_id="t1")
    wait_until(
        lambda: _processed(harness, after) and harness.achievements(account), what="processing"
    )

    [row] = harness.achievements(account)
    assert row["trigger_event_id"] == before["event_id"]


def _processed(harness: Harness, event: dict) -> bool:
    """True once the worker has committed past ``event`` (it is never redelivered after)."""
    import asyncio

    from goalworker import topics

    s = harness.settings
    return asyncio.run(topics.group_lag(s.kafka_bootstrap, s.group_id, s.input_topics)) == 0


def test_the_sweep_publishes_an_exit_that_was_recorded_but_never_published(harness: Harness):
    account = new_account()
    enrollment = f"enr-{account}"
    # As if a worker had died between the insert and the publish, and the event was committed.
    with harness.engine.begin() as conn:
        conn.execute(
            sa.insert(storage.achievements).values(
                enrollment_id=enrollment,
                account_id=account,
                workflow_id="wf",
                contact_id="c1",
                goal_id=uuid.uuid4(),
                goal_type="form_submitted",
                achieved_at=later(1),
                trigger_event_id="evt-lost",
                trigger_event={},
                command_id=command_id_for(account, enrollment),
                recorded_at=sa.func.now() - sa.text("interval '1 minute'"),
            )
        )
    [command] = wait_until(lambda: harness.exit_commands(account), what="the swept exit command")
    assert command["command_id"] == str(command_id_for(account, enrollment))
    assert command["trigger_event_id"] == "evt-lost"
    assert command["_key"] == b"c1"
    wait_until(lambda: harness.achievements(account)[0]["published_at"], what="published_at")


def test_verify_passes_on_a_healthy_account_and_names_each_breach(harness: Harness):
    import asyncio

    from goalworker.verify import verify

    account = new_account()
    harness.add_goals((account, "wf", "tag_added", {"tag_id": "t1"}))
    harness.enroll(account, "c1", "wf", f"enr-{account}-1")
    harness.tag(account, "c1", "x", later(1), tag_id="t1")
    wait_until(lambda: harness.exit_commands(account), what="the exit command")
    wait_until(lambda: harness.achievements(account)[0]["published_at"], what="published_at")
    healthy = asyncio.run(verify(harness.settings, account_prefix=account))
    assert healthy.ok and healthy.achievements == 1 and healthy.exit_records == 1

    # A row whose command never reached the topic, and an enrollment that should have achieved.
    with harness.engine.begin() as conn:
        conn.execute(
            sa.insert(storage.achievements).values(
                enrollment_id=f"enr-{account}-2",
                account_id=account,
                workflow_id="wf",
                contact_id="c2",
                goal_id=uuid.uuid4(),
                goal_type="tag_added",
                achieved_at=later(1),
                trigger_event_id="e",
                trigger_event={},
                command_id=command_id_for(account, f"enr-{account}-2"),
            )
        )
    expected = {f"enr-{account}-1", f"enr-{account}-3"}
    broken = asyncio.run(
        verify(harness.settings, account_prefix=account, expected_enrollments=expected)
    )
    assert not broken.ok
    assert broken.problems["achievements without an exit command on the topic"] == [
        str(command_id_for(account, f"enr-{account}-2"))
    ]
    assert broken.problems["lost achievements (expected, not recorded)"] == [f"enr-{account}-3"]
    assert broken.problems["extra achievements (recorded, not expected)"] == [f"enr-{account}-2"]

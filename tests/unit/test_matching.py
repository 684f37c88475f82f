"""Matching of every goal type against events and enrollment spans."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import uuid4

from goalworker.enrollments import apply, span
from goalworker.events import Event
from goalworker.goals import Goal, GoalType, validate_criteria
from goalworker.matching import GoalIndex, match_event

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def goal(goal_type, criteria, account="a1", workflow="w1", created=T0):
    return Goal(
        uuid4(),
        account,
        workflow,
        GoalType(goal_type),
        validate_criteria(goal_type, criteria),
        1,
        created,
    )


def event(event_type, data, account="a1", at=T0 + timedelta(minutes=5)):
    return Event("e1", event_type, account, "c1", at, data)


def enrolled(workflow="w1", account="a1", start=T0, exited=None):
    return {"enr-1": span(workflow, account, start, exited)}


def achieved(goals, ev, spans=None):
    return match_event(ev, spans if spans is not None else enrolled(), GoalIndex(goals))


def tag(tag_id="t9", name="Other"):
    return event("contact.tag.added", {"tag_id": tag_id, "tag_name": name})


def payment(amount="10.00", currency="USD", products=()):
    return event(
        "payment.completed",
        {
            "payment_id": "p",
            "amount": Decimal(amount),
            "currency": currency,
            "product_ids": tuple(products),
        },
    )


def test_tag_name_matches_ignoring_case_and_surrounding_spaces():
    g = goal("tag_added", {"tag_name": " VIP "})
    assert [m.goal for m in achieved([g], tag(name="  vip"))] == [g]
    assert achieved([g], tag(name="vipp")) == []


def test_tag_id_matches_exactly():
    g = goal("tag_added", {"tag_id": "t1"})
    assert achieved([g], tag(tag_id="t1"))
    assert not achieved([g], tag(tag_id="T1"))


def test_purchase_without_criteria_matches_any_purchase():
    assert achieved([goal("purchase_made", {})], payment())


def test_purchase_products_match_any_of_them():
    g = goal("purchase_made", {"product_ids": ["p1", "p2"]})
    assert achieved([g], payment(products=["p9", "p2"]))
    assert not achieved([g], payment(products=["p9"]))
    assert not achieved([g], payment(products=[]))


def test_purchase_minimum_amount_compares_decimals_in_the_same_currency():
    g = goal("purchase_made", {"min_amount": "49.90", "currency": "USD"})
    assert achieved([g], payment(amount="49.90"))
    assert not achieved([g], payment(amount="49.89"))
    assert not achieved([g], payment(amount="500.00", currency="EUR"))


def test_purchase_products_and_amount_must_both_hold():
    g = goal("purchase_made", {"product_ids": ["p1"], "min_amount": "20", "currency": "USD"})
    assert achieved([g], payment(amount="20.00", products=["p1"]))
    assert not achieved([g], payment(amount="19.99", products=["p1"]))
    assert not achieved([g], payment(amount="99.00", products=["p2"]))


def booking(calendar="cal1", status="confirmed"):
    return event(
        "appointment.booked", {"appointment_id": "x", "calendar_id": calendar, "status": status}
    )


def test_appointment_calendar_and_status_are_optional_and_status_ignores_case():
    assert achieved([goal("appointment_booked", {})], booking())
    g = goal("appointment_booked", {"calendar_id": "cal1", "status": "Confirmed"})
    assert achieved([g], booking(status="CONFIRMED"))
    assert not achieved([g], booking(status="pending"))
    assert not achieved([g], booking(calendar="cal2"))


def test_form_matches_its_form_only():
    g = goal("form_submitted", {"form_id": "f1"})
    assert achieved([g], event("form.submitted", {"form_id": "f1", "submission_id": "s"}))
    assert not achieved([g], event("form.submitted", {"form_id": "f2", "submission_id": "s"}))


def test_pipeline_needs_both_pipeline_and_stage():
    g = goal("pipeline_stage_reached", {"pipeline_id": "p1", "stage_id": "won"})
    ok = {"opportunity_id": "o", "pipeline_id": "p1", "stage_id": "won"}
    assert achieved([g], event("pipeline.stage.changed", ok))
    assert not achieved([g], event("pipeline.stage.changed", ok | {"pipeline_id": "p2"}))
    assert not achieved([g], event("pipeline.stage.changed", ok | {"stage_id": "lost"}))


def test_an_event_before_the_enrollment_started_does_not_achieve():
    g = goal("purchase_made", {})
    assert not achieved([g], payment(), enrolled(start=T0 + timedelta(minutes=6)))
    assert achieved([g], payment(), enrolled(start=T0 + timedelta(minutes=5)))


def test_an_event_after_the_exit_does_not_achieve_but_one_before_it_does():
    g = goal("purchase_made", {})
    assert not achieved([g], payment(), enrolled(exited=T0 + timedelta(minutes=5)))
    assert achieved([g], payment(), enrolled(exited=T0 + timedelta(minutes=6)))


def test_another_accounts_goal_does_not_match():
    other = goal("tag_added", {"tag_id": "t1"}, account="a2")
    assert not achieved([other], tag(tag_id="t1"))
    # nor does an enrollment of another account, even with a goal of the event's account
    mine = goal("tag_added", {"tag_id": "t1"})
    assert not achieved([mine], tag(tag_id="t1"), enrolled(account="a2"))


def test_a_goal_of_another_workflow_does_not_match():
    assert not achieved([goal("purchase_made", {}, workflow="w2")], payment())


def test_when_one_event_meets_two_goals_the_older_goal_wins():
    newer = goal("purchase_made", {}, created=T0)
    older = goal(
        "purchase_made", {"min_amount": "1", "currency": "USD"}, created=T0 - timedelta(days=1)
    )
    [m] = achieved([newer, older], payment())
    assert m.goal is older


def test_an_enrollment_already_achieved_is_skipped():
    g = goal("purchase_made", {})
    assert match_event(payment(), enrolled(), GoalIndex([g]), achieved={"enr-1"}) == []


def test_an_exit_that_overtook_its_enrollment_still_bounds_the_span():
    state = {}
    base = dict(account="a1")
    apply(
        state,
        event(
            "workflow.exited",
            {"workflow_id": "w1", "enrollment_id": "enr-1", "reason": "manual"},
            at=T0 + timedelta(minutes=4),
            **base,
        ),
    )
    apply(
        state,
        event("workflow.enrolled", {"workflow_id": "w1", "enrollment_id": "enr-1"}, at=T0, **base),
    )
    g = goal("purchase_made", {})
    assert not match_event(payment(), state, GoalIndex([g]))
    assert match_event(
        event("payment.completed", payment().data, at=T0 + timedelta(minutes=3)),
        state,
        GoalIndex([g]),
    )


def test_lookups_do_not_scan_unrelated_goals(monkeypatch):
    import goalworker.matching as matching

    examined = []
    real = matching._meets_rest
    monkeypatch.setattr(
        matching, "_meets_rest", lambda entry, ev: examined.append(entry) or real(entry, ev)
    )
    # 20,000 forms on one workflow and 20,000 workflows: one event looks at one goal.
    same_workflow = [goal("form_submitted", {"form_id": f"f{i}"}) for i in range(20_000)]
    other_workflows = [
        goal("form_submitted", {"form_id": "f1"}, workflow=f"w{i}") for i in range(2, 20_000)
    ]
    ev = event("form.submitted", {"form_id": "f1", "submission_id": "s"})
    [m] = achieved(same_workflow + other_workflows, ev)
    assert m.goal is same_workflow[1]
    assert len(examined) == 1


def test_could_achieve_looks_across_the_workflows_of_the_events_account_only():
    index = GoalIndex([goal("tag_added", {"tag_id": "t1"}, workflow="w7")])
    assert index.could_achieve(tag(tag_id="t1"))
    assert not index.could_achieve(tag(tag_id="t2"))
    assert not index.could_achieve(
        event("contact.tag.added", {"tag_id": "t1", "tag_name": "x"}, account="a2")
    )


def test_exited_spans_leave_state_a_grace_window_after_the_exit_was_seen():
    from goalworker.enrollments import prune

    state = {}
    exit_event = event(
        "workflow.exited", {"workflow_id": "w1", "enrollment_id": "enr-1", "reason": "done"}, at=T0
    )
    apply(state, exit_event, now=1000.0)
    apply(state, event("workflow.enrolled", {"workflow_id": "w1", "enrollment_id": "enr-2"}, at=T0))
    assert not prune(state, now=1600.0, grace=600.0)  # an old exit, seen just now, stays
    assert prune(state, now=1600.5, grace=600.0)
    assert list(state) == ["enr-2"]  # open enrollments never expire


def test_enrollment_state_leaves_the_cycle_collector_once_it_has_seen_it():
    import gc

    from goalworker.enrollments import from_json, to_json

    state = {}
    for n in range(3):
        data = {"workflow_id": "w1", "enrollment_id": f"enr-{n}"}
        apply(state, event("workflow.enrolled", data, at=T0))
    exited = {"workflow_id": "w1", "enrollment_id": "enr-0", "reason": "done"}
    apply(state, event("workflow.exited", exited, at=T0 + timedelta(minutes=1)), now=5.0)
    restored = from_json(to_json(state))
    assert restored == state
    gc.collect()
    # Untracked containers cost full collections nothing, however many contacts there are.
    assert not gc.is_tracked(state) and not gc.is_tracked(restored)
    assert not any(gc.is_tracked(s) for s in state.values())

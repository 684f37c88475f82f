"""Criteria validation of every goal type."""

import pytest

from goalworker.errors import InvalidGoal
from goalworker.goals import GoalType, validate_criteria


@pytest.mark.parametrize(
    ("goal_type", "criteria", "expected"),
    [
        ("tag_added", {"tag_id": "t1"}, {"tag_id": "t1"}),
        ("tag_added", {"tag_name": "  VIP  "}, {"tag_name": "VIP"}),
        ("purchase_made", {}, {}),
        ("purchase_made", {"product_ids": ["p1", "p2"]}, {"product_ids": ["p1", "p2"]}),
        (
            "purchase_made",
            {"min_amount": "49.90", "currency": "USD"},
            {"min_amount": "49.90", "currency": "USD"},
        ),
        ("appointment_booked", {}, {}),
        (
            "appointment_booked",
            {"calendar_id": "c1", "status": "confirmed"},
            {"calendar_id": "c1", "status": "confirmed"},
        ),
        ("form_submitted", {"form_id": "f1"}, {"form_id": "f1"}),
        (
            "pipeline_stage_reached",
            {"pipeline_id": "p", "stage_id": "s"},
            {"pipeline_id": "p", "stage_id": "s"},
        ),
    ],
)
def test_valid_criteria_are_returned_normalized(goal_type, criteria, expected):
    assert validate_criteria(goal_type, criteria) == expected


@pytest.mark.parametrize(
    ("goal_type", "criteria", "field", "words"),
    [
        ("tag_added", {}, "criteria", "tag_id or tag_name"),
        ("tag_added", {"tag_name": "   "}, "criteria.tag_name", "at least 1"),
        ("tag_added", {"tag_id": "t", "colour": "red"}, "criteria.colour", "not permitted"),
        ("purchase_made", {"min_amount": "10"}, "criteria", "go together"),
        ("purchase_made", {"currency": "USD"}, "criteria", "go together"),
        (
            "purchase_made",
            {"min_amount": "-1", "currency": "USD"},
            "criteria.min_amount",
            "greater than or equal",
        ),
        ("purchase_made", {"min_amount": "10", "currency": "usd"}, "criteria.currency", "pattern"),
        ("purchase_made", {"product_ids": "p1"}, "criteria.product_ids", "list"),
        ("form_submitted", {}, "criteria.form_id", "required"),
        ("pipeline_stage_reached", {"pipeline_id": "p"}, "criteria.stage_id", "required"),
    ],
)
def test_invalid_criteria_name_the_field_and_the_rule(goal_type, criteria, field, words):
    with pytest.raises(InvalidGoal) as caught:
        validate_criteria(goal_type, criteria)
    assert caught.value.field == field
    assert words in caught.value.message


def test_unknown_goal_type_lists_the_known_ones():
    with pytest.raises(InvalidGoal) as caught:
        validate_criteria("email_opened", {})
    assert caught.value.field == "goal_type"
    assert all(t.value in caught.value.message for t in GoalType)


def test_criteria_must_be_an_object():
    with pytest.raises(InvalidGoal) as caught:
        validate_criteria("form_submitted", ["f1"])
    assert caught.value.field == "criteria"

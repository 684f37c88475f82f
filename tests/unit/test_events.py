"""Decoding and validation of input records."""

import orjson
import pytest

from goalworker.errors import InvalidRecord
from goalworker.events import CONTACT_EVENT_TYPES, ENROLLMENT_EVENT_TYPES, decode

PAYMENT = {
    "event_id": "e1",
    "type": "payment.completed",
    "account_id": "a1",
    "contact_id": "c1",
    "occurred_at": "2026-03-01T10:00:00+02:00",
    "data": {"payment_id": "p1", "amount": "49.90", "currency": "USD", "product_ids": ["x"]},
}
ALL = CONTACT_EVENT_TYPES | ENROLLMENT_EVENT_TYPES


def _with(**changes):
    return orjson.dumps(PAYMENT | changes)


def _data(**changes):
    return orjson.dumps(PAYMENT | {"data": PAYMENT["data"] | changes})


def test_a_valid_payment_decodes_with_a_decimal_amount():
    event = decode(b"c1", orjson.dumps(PAYMENT), ALL)
    assert event.data["amount"] == __import__("decimal").Decimal("49.90")
    assert event.data["product_ids"] == ("x",)
    assert event.occurred_at.utcoffset().total_seconds() == 7200


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        (b"c1", b"{not json", "not valid UTF-8 JSON"),
        (b"c1", b"\xff\xfe", "not valid UTF-8 JSON"),
        (b"c1", b"[1, 2]", "must be a JSON object"),
        (b"c1", None, "tombstone"),
        (b"c1", _data(amount=49.9), "'data.amount' must be a decimal string"),
        (b"c1", _data(amount="4e5"), "'data.amount' must be a non-negative decimal"),
        (b"c1", _data(currency="usd"), "'data.currency' must be an ISO 4217"),
        (b"c1", _data(product_ids="x"), "'data.product_ids' must be a list"),
        (
            b"c1",
            _with(occurred_at="2026-03-01T10:00:00"),
            "must carry a date, a time and a UTC offset",
        ),
        (b"c1", _with(occurred_at="yesterday"), "not an RFC 3339 timestamp"),
        (b"c1", _with(type="payment.refunded"), "unknown event type"),
        (b"c1", _with(version=2), "field 'version'"),
        (b"c1", _with(colour="red"), "unexpected field(s) ['colour']"),
        (b"c1", _with(account_id=""), "'account_id' must be a non-empty string"),
        (b"c2", orjson.dumps(PAYMENT), "does not match field 'contact_id'"),
        (None, orjson.dumps(PAYMENT), "has no key"),
    ],
)
def test_bad_records_are_rejected_with_the_field_and_rule(key, value, words):
    with pytest.raises(InvalidRecord) as caught:
        decode(key, value, ALL)
    assert words in caught.value.reason


def test_a_missing_data_field_is_named():
    data = dict(PAYMENT["data"])
    del data["currency"]
    with pytest.raises(InvalidRecord, match=r"'data.currency' is required"):
        decode(b"c1", orjson.dumps(PAYMENT | {"data": data}), ALL)


def test_a_type_on_the_wrong_topic_is_rejected_and_keeps_its_event_id():
    with pytest.raises(InvalidRecord) as caught:
        decode(b"c1", orjson.dumps(PAYMENT), frozenset({"contact.tag.added"}))
    assert "does not carry" in caught.value.reason
    assert caught.value.event_id == "e1"

"""Property-based: no input makes decoding fail in any way but a clean rejection."""

from __future__ import annotations

import json
from decimal import Decimal

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from goalworker.errors import InvalidRecord
from goalworker.events import CONTACT_EVENT_TYPES, DATA_FIELDS, ENROLLMENT_EVENT_TYPES, decode

ALL = CONTACT_EVENT_TYPES | ENROLLMENT_EVENT_TYPES
VALID = {
    "event_id": "e1",
    "type": "payment.completed",
    "account_id": "a1",
    "contact_id": "c1",
    "occurred_at": "2026-03-01T10:00:00Z",
    "data": {"payment_id": "p1", "amount": "49.90", "currency": "USD", "product_ids": ["x"]},
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
fields = st.sampled_from([*VALID, "version", "extra"])
data_fields = st.sampled_from(sorted({f for fs in DATA_FIELDS.values() for f in fs} | {"extra"}))


@st.composite
def mutated_envelopes(draw: st.DrawFn) -> dict:
    """A valid envelope with a few fields replaced, removed or added."""
    envelope = orjson.loads(orjson.dumps(VALID))
    envelope["type"] = draw(st.sampled_from([*sorted(DATA_FIELDS), "unknown.type"]))
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["replace", "delete", "replace_data", "delete_data"]))
        if action == "replace":
            envelope[draw(fields)] = draw(json_values)
        elif action == "delete":
            envelope.pop(draw(fields), None)
        elif isinstance(envelope.get("data"), dict):
            if action == "replace_data":
                envelope["data"][draw(data_fields)] = draw(json_values)
            else:
                envelope["data"].pop(draw(data_fields), None)
    return envelope


def _decodes_or_rejects(key: bytes | None, value: bytes | None) -> None:
    try:
        event = decode(key, value, ALL)
    except InvalidRecord as exc:
        assert exc.reason  # every rejection says why
        return
    # Whatever passes is a well-formed event: typed ids, an aware time, decimal amounts.
    assert event.occurred_at.tzinfo is not None
    assert key == event.contact_id.encode()
    if "amount" in event.data:
        assert isinstance(event.data["amount"], Decimal)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.one_of(st.none(), st.binary(max_size=20)))
def test_arbitrary_bytes_are_rejected_cleanly(value, key):
    _decodes_or_rejects(key, value)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_envelopes(), st.sampled_from([b"c1", b"c2", None]))
def test_mutated_envelopes_are_accepted_only_when_valid(envelope, key):
    # The standard library writes what orjson refuses to (integers past 64 bits, say).
    _decodes_or_rejects(key, json.dumps(envelope).encode())


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=40))
def test_any_timestamp_text_is_parsed_or_rejected(text):
    _decodes_or_rejects(b"c1", orjson.dumps(VALID | {"occurred_at": text}))

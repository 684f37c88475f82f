"""Input events: decode one Kafka record into a validated :class:`Event`, or say why not.

Every input record is a UTF-8 JSON envelope keyed by contact id. Validation is written by hand
rather than through a model library because it runs once per record on the hot path; the
rules are the contract in the README, and each failure names the field, the value received
and the rule it broke.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from goalworker.errors import InvalidRecord

TAG_ADDED = "contact.tag.added"
PAYMENT_COMPLETED = "payment.completed"
APPOINTMENT_BOOKED = "appointment.booked"
FORM_SUBMITTED = "form.submitted"
PIPELINE_STAGE_CHANGED = "pipeline.stage.changed"
ENROLLED = "workflow.enrolled"
EXITED = "workflow.exited"

CONTACT_EVENT_TYPES = frozenset(
    {TAG_ADDED, PAYMENT_COMPLETED, APPOINTMENT_BOOKED, FORM_SUBMITTED, PIPELINE_STAGE_CHANGED}
)
ENROLLMENT_EVENT_TYPES = frozenset({ENROLLED, EXITED})

#: Envelope versions this worker understands; a record may omit ``version`` (meaning 1).
SUPPORTED_VERSIONS = frozenset({1})
#: Longest id accepted, in characters.
MAX_ID_LENGTH = 256
#: Longest free-text value (tag names, statuses, exit reasons) accepted, in characters.
MAX_TEXT_LENGTH = 1024
#: Timestamps must fall within these years; beyond them lie typos and overflow at UTC.
MIN_YEAR, MAX_YEAR = 1970, 2999
#: Most product ids one payment may carry.
MAX_PRODUCT_IDS = 1000

_ENVELOPE_FIELDS = ("event_id", "type", "account_id", "contact_id", "occurred_at", "data")
_ENVELOPE_ALLOWED = frozenset((*_ENVELOPE_FIELDS, "version"))
_DECIMAL = re.compile(r"\d{1,18}(\.\d{1,8})?")
_CURRENCY = re.compile(r"[A-Z]{3}")


@dataclass(frozen=True, slots=True)
class Event:
    """A validated input event; ``data`` holds the per-type fields, amounts as Decimal."""

    event_id: str
    type: str
    account_id: str
    contact_id: str
    occurred_at: datetime
    data: Mapping[str, Any]


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _id(field: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRecord(f"field '{field}' must be a non-empty string, got {_shown(value)}")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidRecord(f"field '{field}' is longer than {MAX_ID_LENGTH} characters")
    return value


def _text(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidRecord(f"field '{field}' must be a string, got {_type_name(value)}")
    if len(value) > MAX_TEXT_LENGTH:
        raise InvalidRecord(f"field '{field}' is longer than {MAX_TEXT_LENGTH} characters")
    return value


def _amount(field: str, value: object) -> Decimal:
    if not isinstance(value, str):
        raise InvalidRecord(
            f"field '{field}' must be a decimal string such as \"49.90\", "
            f"got {_type_name(value)} {_shown(value)}"
        )
    if not _DECIMAL.fullmatch(value):
        raise InvalidRecord(
            f"field '{field}' must be a non-negative decimal string with at most 18 digits "
            f"before and 8 after the point, got {_shown(value)}"
        )
    try:
        return Decimal(value)
    except InvalidOperation as exc:  # unreachable after the pattern, kept as a guard
        raise InvalidRecord(f"field '{field}' is not a decimal: {_shown(value)}") from exc


def _currency(field: str, value: object) -> str:
    if not isinstance(value, str) or not _CURRENCY.fullmatch(value):
        raise InvalidRecord(
            f"field '{field}' must be an ISO 4217 code of three capital letters, "
            f"got {_shown(value)}"
        )
    return value


def _id_list(field: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise InvalidRecord(f"field '{field}' must be a list of ids, got {_type_name(value)}")
    if len(value) > MAX_PRODUCT_IDS:
        raise InvalidRecord(f"field '{field}' has more than {MAX_PRODUCT_IDS} entries")
    return tuple(_id(f"{field}[{i}]", item) for i, item in enumerate(value))


_Check = Callable[[str, object], object]

#: The ``data`` fields of each event type, each with its check; all are required.
DATA_FIELDS: dict[str, dict[str, _Check]] = {
    TAG_ADDED: {"tag_id": _id, "tag_name": _text},
    PAYMENT_COMPLETED: {
        "payment_id": _id,
        "amount": _amount,
        "currency": _currency,
        "product_ids": _id_list,
    },
    APPOINTMENT_BOOKED: {"appointment_id": _id, "calendar_id": _id, "status": _text},
    FORM_SUBMITTED: {"form_id": _id, "submission_id": _id},
    PIPELINE_STAGE_CHANGED: {"opportunity_id": _id, "pipeline_id": _id, "stage_id": _id},
    ENROLLED: {"workflow_id": _id, "enrollment_id": _id},
    EXITED: {"workflow_id": _id, "enrollment_id": _id, "reason": _text},
}


def parse_timestamp(field: str, value: object) -> datetime:
    """Parse an RFC 3339 timestamp that carries its UTC offset."""
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidRecord(f"field '{field}' must be an RFC 3339 timestamp string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidRecord(
            f"field '{field}' is not an RFC 3339 timestamp: {_shown(value)}"
        ) from exc
    if parsed.tzinfo is None or "T" not in value.upper():
        raise InvalidRecord(
            f"field '{field}' must carry a date, a time and a UTC offset "
            f"(such as 2026-01-31T09:30:00Z), got {_shown(value)}"
        )
    if not MIN_YEAR <= parsed.year <= MAX_YEAR:
        raise InvalidRecord(
            f"field '{field}' is outside the years {MIN_YEAR} to {MAX_YEAR}: {_shown(value)}"
        )
    return parsed


def _data(event_type: str, value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRecord(f"field 'data' must be an object, got {_type_name(value)}")
    fields = DATA_FIELDS[event_type]
    unexpected = value.keys() - fields.keys()
    if unexpected:
        raise InvalidRecord(
            f"field 'data' has unexpected field(s) {sorted(unexpected)} for type '{event_type}'"
        )
    checked: dict[str, Any] = {}
    for name, check in fields.items():
        if name not in value:
            raise InvalidRecord(f"field 'data.{name}' is required for type '{event_type}'")
        checked[name] = check(f"data.{name}", value[name])
    return checked


def decode(key: bytes | None, value: bytes | None, allowed_types: frozenset[str]) -> Event:
    """Decode and validate one record; raise :class:`InvalidRecord` with the reason if bad.

    ``allowed_types`` are the event types the record's topic carries.
    """
    if value is None:
        raise InvalidRecord("record has no value (a tombstone); an event envelope is required")
    try:
        envelope = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidRecord(f"value is not valid UTF-8 JSON: {exc}") from exc
    if not isinstance(envelope, dict):
        raise InvalidRecord(f"value must be a JSON object, got {_type_name(envelope)}")

    raw_event_id = envelope.get("event_id")
    event_id = raw_event_id if isinstance(raw_event_id, str) else None
    try:
        return _envelope(key, envelope, allowed_types)
    except InvalidRecord as exc:
        exc.event_id = event_id
        raise


def _envelope(key: bytes | None, envelope: dict[str, Any], allowed: frozenset[str]) -> Event:
    unexpected = envelope.keys() - _ENVELOPE_ALLOWED
    if unexpected:
        raise InvalidRecord(f"envelope has unexpected field(s) {sorted(unexpected)}")
    for name in _ENVELOPE_FIELDS:
        if name not in envelope:
            raise InvalidRecord(f"field '{name}' is required")
    version = envelope.get("version", 1)
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        raise InvalidRecord(
            f"field 'version' must be one of {sorted(SUPPORTED_VERSIONS)}, got {_shown(version)}"
        )

    event_type = envelope["type"]
    if not isinstance(event_type, str) or event_type not in DATA_FIELDS:
        raise InvalidRecord(f"field 'type' names an unknown event type: {_shown(event_type)}")
    if event_type not in allowed:
        raise InvalidRecord(
            f"field 'type' is {event_type!r}, which this topic does not carry "
            f"(expected one of {sorted(allowed)})"
        )

    contact_id = _id("contact_id", envelope["contact_id"])
    if key is None:
        raise InvalidRecord("record has no key; the key must be the contact id")
    if key != contact_id.encode():
        raise InvalidRecord(
            f"record key {_shown(key)} does not match field 'contact_id' {_shown(contact_id)}"
        )

    return Event(
        event_id=_id("event_id", envelope["event_id"]),
        type=event_type,
        account_id=_id("account_id", envelope["account_id"]),
        contact_id=contact_id,
        occurred_at=parse_timestamp("occurred_at", envelope["occurred_at"]),
        data=_data(event_type, envelope["data"]),
    )

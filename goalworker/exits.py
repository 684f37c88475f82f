"""Outgoing records: ``workflow.exit`` commands and dead-letter records."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

EXIT_COMMAND_TYPE = "workflow.exit"
EXIT_REASON = "goal_achieved"

#: Header names on dead-letter records; the value and key are the original bytes.
DLQ_REASON = "goalworker.error.reason"
DLQ_TOPIC = "goalworker.source.topic"
DLQ_PARTITION = "goalworker.source.partition"
DLQ_OFFSET = "goalworker.source.offset"
DLQ_EVENT_ID = "goalworker.source.event_id"
DLQ_FAILED_AT = "goalworker.failed_at"


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def exit_command(row: dict[str, Any]) -> bytes:
    """The exit command of an achievement row, as JSON; identical on every resend."""
    return orjson.dumps(
        {
            "command_id": str(row["command_id"]),
            "type": EXIT_COMMAND_TYPE,
            "reason": EXIT_REASON,
            "account_id": row["account_id"],
            "workflow_id": row["workflow_id"],
            "enrollment_id": row["enrollment_id"],
            "contact_id": row["contact_id"],
            "goal_id": str(row["goal_id"]),
            "goal_type": row["goal_type"],
            "achieved_at": _rfc3339(row["achieved_at"]),
            "trigger_event_id": row["trigger_event_id"],
        }
    )


def dead_letter_headers(
    reason: str, topic: str, partition: int, offset: int, event_id: str | None
) -> list[tuple[str, bytes]]:
    """Headers that say where a rejected record came from and why it was rejected."""
    headers = [
        (DLQ_REASON, reason.encode()),
        (DLQ_TOPIC, topic.encode()),
        (DLQ_PARTITION, str(partition).encode()),
        (DLQ_OFFSET, str(offset).encode()),
        (DLQ_FAILED_AT, _rfc3339(datetime.now(UTC)).encode()),
    ]
    if event_id is not None:
        headers.append((DLQ_EVENT_ID, event_id.encode(errors="replace")))
    return headers

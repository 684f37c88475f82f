"""The exception tree of goalworker: one root, classified by what the caller should do."""

from __future__ import annotations


class GoalworkerError(Exception):
    """Root of every error goalworker raises on purpose."""

    #: True when the same operation may succeed if tried again later.
    retryable: bool = False


class InvalidRecord(GoalworkerError):
    """An input record that cannot be accepted; it goes to the dead-letter topic.

    ``reason`` is a plain sentence naming the field, the value received and the rule it broke.
    """

    def __init__(self, reason: str, *, event_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.event_id = event_id


class InvalidGoal(GoalworkerError):
    """A goal configuration whose type or criteria break the goal rules."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class StorageUnavailable(GoalworkerError):
    """PostgreSQL could not be reached or dropped the connection; try again later."""

    retryable = True


class PublishFailed(GoalworkerError):
    """Kafka did not acknowledge a record we must publish; try again later."""

    retryable = True


class ServicesNotConfigured(GoalworkerError):
    """Kafka or PostgreSQL is not configured; the message says how to start them."""


class StaleVersion(GoalworkerError):
    """A goal change based on a version that is no longer the current one; nothing changed."""

    def __init__(self, goal_id: object, expected: int, current: int) -> None:
        super().__init__(
            f"goal {goal_id} is at version {current}, the change was based on version "
            f"{expected}; read the goal again and reapply the change"
        )
        self.goal_id = goal_id
        self.expected = expected
        self.current = current


class InvalidToken(GoalworkerError):
    """A bearer token that is missing, malformed, expired, forged or lacks a claim."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AuthNotConfigured(GoalworkerError):
    """The API has no usable key to verify tokens with; the message names the setting."""

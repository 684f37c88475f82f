"""Configuration from environment variables, all prefixed ``GOALWORKER_``."""

from __future__ import annotations

from functools import cached_property
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the worker; see the README for what each one does."""

    model_config = SettingsConfigDict(env_prefix="GOALWORKER_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    database_url: str = "postgresql+psycopg://goalworker:goalworker@127.0.0.1:55432/goalworker"

    #: Kafka consumer group, also the prefix of the worker's internal changelog topic.
    group_id: str = "goalworker"
    #: Partitions of every input topic; the enrollment state table is partitioned the same way.
    partitions: int = Field(default=6, ge=1, le=1024)
    #: Replication factor of the topics the worker creates (state changelogs, exits, dead
    #: letters); use 3 on a production cluster.
    replication_factor: int = Field(default=1, ge=1, le=16)

    topic_tag_added: str = "contact.tag.added"
    topic_payment_completed: str = "payment.completed"
    topic_appointment_booked: str = "appointment.booked"
    topic_form_submitted: str = "form.submitted"
    topic_pipeline_stage_changed: str = "pipeline.stage.changed"
    topic_enrollment: str = "workflow.enrollment"
    topic_exit: str = "workflow.exit"
    topic_dead_letter: str = "goalworker.dlq"

    #: Events handled per batch: their database effects share one transaction.
    batch_max_events: int = Field(default=1000, ge=1, le=100_000)
    #: A partly filled batch goes to an idle writer once its oldest event has waited this
    #: many milliseconds; while the writer is busy it keeps filling, and goes to the writer
    #: as soon as the writer is done.
    batch_max_wait_ms: int = Field(default=10, ge=1, le=60_000)
    #: How often the goal cache polls PostgreSQL for changed goals, in seconds; a safety net,
    #: since every change is also pushed to the worker by LISTEN/NOTIFY.
    goal_refresh_seconds: float = Field(default=30.0, gt=0, le=3600)
    #: How long an exited enrollment stays in state so late events that occurred before the
    #: exit can still achieve it, in seconds.
    grace_seconds: float = Field(default=600.0, ge=0)
    #: Longest wait between two attempts when PostgreSQL or Kafka is down, in seconds.
    retry_max_seconds: float = Field(default=30.0, gt=0)
    #: How often the worker looks for achievements whose exit command was never published
    #: (a crash between the database write and the publish), in seconds.
    sweep_interval_seconds: float = Field(default=10.0, gt=0)
    #: Only achievements recorded at least this long ago are swept, so in-flight batches
    #: publish their own, in seconds.
    sweep_min_age_seconds: float = Field(default=30.0, ge=0)
    #: Largest input record accepted, in bytes; larger ones go to the dead-letter topic.
    max_record_bytes: int = Field(default=256 * 1024, ge=1024)

    #: A worker silent for this long is presumed dead and its partitions move, in seconds.
    session_timeout_seconds: float = Field(default=10.0, ge=6, le=300)
    #: A worker that holds partitions with records waiting but has been handed none for this
    #: long (outside rebalancing and state recovery) logs the fault and exits with code 70,
    #: for its supervisor to restart it, in seconds; 0 turns the check off. faust can leave a
    #: worker stuck so after a rebalance that interrupted its state recovery.
    stall_exit_seconds: float = Field(default=60.0, ge=0)

    log_level: str = "INFO"
    #: The worker's event loop: uvloop (faster per event) or Python's own asyncio loop.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"

    #: Signature algorithm of the API's bearer tokens: HS256 (shared secret) or RS256.
    jwt_algorithm: Literal["HS256", "RS256"] = "HS256"
    #: HS256 secret that signs and verifies tokens, at least 32 bytes; empty means unset.
    jwt_secret: SecretStr = SecretStr("")
    #: RS256 public key that verifies tokens: PEM text, or the path of a PEM file.
    jwt_public_key: str = ""
    #: When set, tokens must carry this ``aud`` claim; when empty, tokens must carry none.
    jwt_audience: str = ""

    @cached_property
    def event_topics(self) -> dict[str, str]:
        """Map each contact-event topic name to the event type it carries."""
        return {
            self.topic_tag_added: "contact.tag.added",
            self.topic_payment_completed: "payment.completed",
            self.topic_appointment_booked: "appointment.booked",
            self.topic_form_submitted: "form.submitted",
            self.topic_pipeline_stage_changed: "pipeline.stage.changed",
        }

    @property
    def topic_of_event_type(self) -> dict[str, str]:
        """Map each contact-event type to the topic that carries it."""
        return {event_type: topic for topic, event_type in self.event_topics.items()}

    @property
    def input_topics(self) -> list[str]:
        """Every topic the worker consumes."""
        return [*self.event_topics, self.topic_enrollment]

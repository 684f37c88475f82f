"""The stream app: faust wiring of the consume path in :mod:`goalworker.pipeline`.

One agent reads every input topic and hands each record to the :class:`Processor` (which
hands its batches to a writer on its own clock); timers commit offsets, sweep unpublished
exit commands and drop expired recent events; a task listens for goal changes. Worker state
lives in two faust tables keyed by contact and partitioned like the input: enrollment spans
and recent goal-relevant events.
"""

from __future__ import annotations

import gc
import logging
import os
from typing import Any

import faust
import orjson
from faust.serializers.codecs import Codec

from goalworker import enrollments, recent_events
from goalworker.pipeline import Processor
from goalworker.settings import Settings

log = logging.getLogger(__name__)

#: Exit code of a worker that stopped itself because faust stopped handing it records.
EXIT_STALLED = 70


class RecentEventsCodec(Codec):
    """Changelog codec of a contact's recent events."""

    def _dumps(self, s: Any) -> bytes:
        return recent_events.to_bytes(s)

    def _loads(self, s: bytes) -> Any:
        return recent_events.from_bytes(s)


class EnrollmentsCodec(Codec):
    """Changelog codec of a contact's enrollment spans."""

    def _dumps(self, s: Any) -> bytes:
        return orjson.dumps(enrollments.to_json(s))

    def _loads(self, s: bytes) -> Any:
        return enrollments.from_json(orjson.loads(s))


def _brokers(bootstrap: str) -> list[str]:
    return [f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip()]


def _contact_table(app: faust.App, settings: Settings, name: str, codec: Codec, help: str) -> Any:
    """A table keyed by contact id (raw key bytes) whose values travel through ``codec``.

    faust derives a table's serializers from its value type and bakes them into the
    changelog topic at construction, so both are replaced here before anything is written.
    """
    table: Any = app.Table(
        name, default=None, partitions=settings.partitions, key_type=bytes, help=help
    )
    table.value_serializer = codec
    table.changelog_topic = app.topic(
        f"{settings.group_id}-{name}-changelog",
        key_type=bytes,
        key_serializer="raw",
        value_serializer=codec,
        partitions=settings.partitions,
        compacting=True,
        deleting=False,
        acks=False,
        internal=True,
    )
    return table


def create_app(settings: Settings) -> tuple[faust.App, Processor]:
    """Build the faust app, its enrollment table and agent, wired to a :class:`Processor`."""
    app = faust.App(
        settings.group_id,
        broker=_brokers(settings.kafka_bootstrap),
        store="memory://",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        web_enabled=False,
        producer_acks=-1,
        producer_max_request_size=8 * 1024 * 1024,
        consumer_auto_offset_reset="earliest",
        # Stopping or rebalancing must not wait for unacked events: the pending batch is
        # flushed by us before that (or handed back uncommitted), never waited on by faust.
        stream_wait_empty=False,
        broker_commit_interval=1.0,
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=settings.session_timeout_seconds / 4,
        autodiscover=False,
        # No standby replicas: state lives in memory and is rebuilt from the changelog when a
        # partition is assigned, and faust's standby recovery can hang a worker that has
        # partitions of its own to process (seen with two workers on a grown changelog).
        table_standby_replicas=0,
    )
    table = _contact_table(
        app,
        settings,
        "enrollments",
        EnrollmentsCodec(),
        "Enrollment spans per contact, partitioned like the input topics.",
    )
    recent = _contact_table(
        app,
        settings,
        "recent_events",
        RecentEventsCodec(),
        "Recent goal-relevant events per contact, for enrollments that arrive late.",
    )
    processor = Processor(settings, app, table, recent)
    inputs = app.topic(*settings.input_topics, key_serializer="raw", value_serializer="raw")
    # Created when missing (with the worker's replication factor); never changed if present.
    outputs = [
        app.topic(settings.topic_exit, partitions=settings.partitions, internal=True),
        app.topic(
            settings.topic_dead_letter,
            partitions=settings.partitions,
            internal=True,
            config={"max.message.bytes": str(8 * 1024 * 1024)},
        ),
    ]

    @app.agent(inputs)
    async def consume(stream: Any) -> None:
        for topic in outputs:
            await topic.maybe_declare()
        await processor.refresh_goals(force=True)
        # What exists now (modules, classes, faust's services, the clients) lives as long as
        # the process: leave it out of the cycle collector's full passes, which otherwise
        # stop the worker ~0.1 s each (the state itself is untracked, see enrollments.py).
        gc.collect()
        gc.freeze()
        stream = stream.noack()
        processor.start_consuming(stream)
        try:
            async for fevent in stream.events():
                await processor.handle(fevent)
        finally:
            await processor.flush_before_stop()

    # faust's decorators are untyped; the functions they wrap are checked all the same.
    @app.timer(interval=settings.sweep_interval_seconds)  # type: ignore[untyped-decorator]
    async def sweep_unpublished_exits() -> None:
        if processor.stream is not None:
            await processor.sweep_unpublished()

    @app.timer(interval=60.0)  # type: ignore[untyped-decorator]
    async def forget_expired_recent_events() -> None:
        dropped = processor.forget_expired_recent_events()
        if dropped:
            log.debug("dropped expired recent events of %d contacts", dropped)

    @app.task  # type: ignore[untyped-decorator]
    async def listen_for_goal_changes() -> None:
        await processor.goals.listen(processor._retrying)

    @app.timer(interval=settings.goal_refresh_seconds)  # type: ignore[untyped-decorator]
    async def poll_goals() -> None:
        await processor.refresh_goals()

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]
    async def commit_durable_offsets() -> None:
        if processor.stream is not None:
            # Marks first: an offset committed has its exit commands marked published.
            await processor.mark_published()
            await processor.commit()

    @app.timer(interval=10.0)  # type: ignore[untyped-decorator]
    async def watch_delivery() -> None:
        fault = await processor.delivery_stalled() if processor.stream is not None else None
        if fault is not None:
            log.error(
                "%s; exiting with code %d so that the worker is restarted (set "
                "GOALWORKER_STALL_EXIT_SECONDS=0 to keep it running); nothing is lost: "
                "offsets past unprocessed records are never committed",
                fault,
                EXIT_STALLED,
            )
            logging.shutdown()
            os._exit(EXIT_STALLED)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def flush_before_revoke(app: faust.App, revoked: Any, **kwargs: Any) -> None:
        log.info(
            "partitions revoked: %s; flushing the pending batch and committing first",
            sorted(map(str, revoked)),
        )
        if processor.stream is not None:
            await processor.on_revoked(revoked)
        else:
            processor.offsets.revoke(revoked)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def start_offsets(app: faust.App, assigned: Any, **kwargs: Any) -> None:
        processor.on_assigned(assigned)

    return app, processor

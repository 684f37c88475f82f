"""The consume path: each record handled in memory at once, its effects flushed in batches.

``Processor.accept`` decodes and validates a record, updates the contact's enrollment spans,
matches goals and queues the record's effects. A full or due batch is handed to a writer
task (``Processor.submit``) that makes it durable while the next batch fills: its state
changes to the changelog topics and, side by side, one PostgreSQL transaction for its
enrollment changes and achievements; then its exit commands and dead-letter records, each
awaited until Kafka has acknowledged it. Only then do its records' offsets count as durable
(see offsets.py), so no offset is committed ahead of its effects. One batch is written at a
time, in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import Any, TypeVar

import faust
import sqlalchemy.exc
from aiokafka.errors import KafkaError

from goalworker import enrollments, recent_events, storage, topics
from goalworker.enrollments import ContactEnrollments, Span
from goalworker.errors import GoalworkerError, InvalidRecord
from goalworker.events import (
    CONTACT_EVENT_TYPES,
    ENROLLED,
    ENROLLMENT_EVENT_TYPES,
    EXITED,
    Event,
    decode,
)
from goalworker.exits import dead_letter_headers, exit_command
from goalworker.goalcache import GoalCache
from goalworker.goals import GOAL_TYPE_OF_EVENT
from goalworker.matching import Match, match_event
from goalworker.offsets import OffsetLedger, Seen
from goalworker.recent_events import RecentEvent
from goalworker.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Enrollments remembered as achieved, so repeats skip the database; a cache, not the truth.
ACHIEVED_CACHE_SIZE = 200_000
#: Longest wait for the pending batch when the worker stops, in seconds.
SHUTDOWN_FLUSH_SECONDS = 10.0
#: Seconds between the worker's INFO progress lines.
PROGRESS_EVERY_SECONDS = 10.0


@dataclass(slots=True)
class _Item:
    """One consumed record and the effects it asks for."""

    event: Any  # faust.EventT
    received: float
    #: True when the record moves its partition's commit once durable (see offsets.py).
    counts: bool = False
    #: State changes to write to the changelog topics: (topic, partition, key, value).
    changelog: list[tuple[str, int, bytes, bytes | None]] = field(default_factory=list)
    changes: list[storage.EnrollmentChange] = field(default_factory=list)
    candidates: list[storage.NewAchievement] = field(default_factory=list)
    rejection: str | None = None
    event_id: str | None = None


@dataclass(slots=True)
class Counters:
    """What the worker has done since it started."""

    consumed: int = 0
    enrollment_events: int = 0
    achievements: int = 0
    exits_published: int = 0
    dead_letters: int = 0


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, GoalworkerError):
        return exc.retryable
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        return exc.connection_invalidated or isinstance(
            exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError
        )
    if isinstance(exc, KafkaError):
        return bool(getattr(exc, "retriable", False)) or "Timeout" in type(exc).__name__
    return isinstance(exc, OSError | asyncio.TimeoutError)


def _jsonable(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _jsonable(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_jsonable(v) for v in data]
    if isinstance(data, Decimal):
        return str(data)
    return data


class Processor:
    """The consume path of one worker process; faust calls it, it owns the batch."""

    def __init__(self, settings: Settings, app: faust.App, table: Any, recent: Any) -> None:
        self.settings = settings
        self.app = app
        self.table = table
        self.recent = recent
        # One transaction at a time, retried on failure: no ping round trip before each.
        self.engine = storage.make_engine(settings.database_url, pre_ping=False)
        self.goals = GoalCache(self.engine, settings.database_url)
        self.counters = Counters()
        self.stream: Any = None
        self._allowed_types: dict[str, frozenset[str]] = {
            topic: frozenset({event_type}) for topic, event_type in settings.event_topics.items()
        }
        self._allowed_types[settings.topic_enrollment] = ENROLLMENT_EVENT_TYPES
        self._grace_seconds = settings.grace_seconds
        self._batch: list[_Item] = []
        self._flush_lock = asyncio.Lock()
        self.offsets = OffsetLedger()
        #: The lookup of the starting offsets of the partitions last assigned.
        self._starting: asyncio.Future[None] | None = None
        #: The batch being written while the next one fills, if any.
        self._writer: asyncio.Future[None] | None = None
        #: A hand-over started by the batch timer or a finished writer.
        self._handover: asyncio.Future[None] | None = None
        #: Fires when the pending batch has waited ``batch_max_wait_ms``.
        self._batch_timer: asyncio.TimerHandle | None = None
        #: Enrollments whose exit commands Kafka acknowledged, to be marked published with
        #: the next transaction (or by the commit timer when none comes).
        self._unmarked: list[str] = []
        self._achieved: dict[str, None] = {}
        self._last_progress = time.monotonic()
        #: Since when the consume loop has been waiting for faust's next record; None while
        #: it handles one (which may wait on our own writer, say while PostgreSQL is down).
        self._waiting_since: float | None = None

    # -- goals -------------------------------------------------------------------------------

    async def refresh_goals(self, *, force: bool = False) -> None:
        """Reload the goal cache, or only look whether the goal table changed."""
        await self.goals.reload(self._retrying, force=force, why="forced" if force else "poll")

    # -- per record, in memory ---------------------------------------------------------------

    def start_consuming(self, stream: Any) -> None:
        """The consume loop is about to wait for its first record."""
        self.stream = stream
        self._waiting_since = time.monotonic()

    async def handle(self, fevent: Any) -> None:
        """The consume loop's step: take a record, hand over the batch if it is due."""
        self._waiting_since = None
        await self.take(fevent)
        if self.batch_due():
            await self.submit()
        self._waiting_since = time.monotonic()

    async def take(self, fevent: Any) -> None:
        """Handle one record from faust; first read any records of its partition that were
        skipped before it (a hole, see offsets.py). Called from the agent loop."""
        message = fevent.message
        tp = message.tp
        seen = self.offsets.seen(tp, message.offset)
        if seen is Seen.HOLE:
            await self._fill_hole(tp, message.offset, "were not handed to the worker by faust")
            seen = self.offsets.seen(tp, message.offset)
        if seen is Seen.NOT_OURS:
            log.debug(
                "skipped record topic=%s partition=%d offset=%d: the partition is not held "
                "by this worker any more",
                message.topic,
                message.partition,
                message.offset,
            )
            return
        self.accept(fevent, counts=seen is Seen.NEXT)

    async def _fill_hole(self, tp: Any, offset: int, why: str) -> None:
        """Read the records of ``tp`` from its next expected offset up to ``offset`` directly
        and hand them over in order."""
        start = self.offsets.expected(tp)
        if start is None or start >= offset:
            return
        log.warning(
            "records of %s from offset %d to %d %s; reading them directly before going on",
            tp,
            start,
            offset - 1,
            why,
        )
        bootstrap = self.settings.kafka_bootstrap
        records = await self._retrying(
            f"read skipped records of {tp}",
            lambda: topics.read_range(bootstrap, tp.topic, tp.partition, start, offset),
        )
        for record in records:
            if self.offsets.seen(tp, record.offset) is Seen.NEXT:
                self.accept(_Refetched(_RefetchedMessage.of(tp, record)), counts=True)
        expected = self.offsets.expected(tp)
        if expected is not None and expected < offset:
            log.warning(
                "%s holds no records from offset %d to %d (a gap in the log); going on",
                tp,
                expected,
                offset - 1,
            )
            self.offsets.skip_to(tp, offset)
        if self.batch_due():
            await self.submit()

    def accept(self, fevent: Any, *, counts: bool = False) -> None:
        """Handle one record in memory and queue its effects.

        ``counts``: the record is its partition's next one, so its offset can be committed
        once its effects are durable.
        """
        message = fevent.message
        item = _Item(fevent, time.monotonic(), counts=counts)
        self.counters.consumed += 1
        try:
            event = self._decode(message)
        except InvalidRecord as exc:
            item.rejection, item.event_id = exc.reason, exc.event_id
            log.warning(
                "rejected record topic=%s partition=%d offset=%d event_id=%s: %s; "
                "it goes to the dead-letter topic",
                message.topic,
                message.partition,
                message.offset,
                exc.event_id,
                exc.reason,
            )
        else:
            item.event_id = event.event_id
            if event.type in CONTACT_EVENT_TYPES:
                self._on_contact_event(item, event, message)
            else:
                self._on_enrollment_event(item, event, message)
        self._batch.append(item)
        if len(self._batch) == 1:
            self._arm_batch_timer()

    def _decode(self, message: Any) -> Event:
        value = message.value
        if value is not None and len(value) > self.settings.max_record_bytes:
            raise InvalidRecord(
                f"value is {len(value)} bytes, more than the limit of "
                f"{self.settings.max_record_bytes} (GOALWORKER_MAX_RECORD_BYTES)"
            )
        return decode(message.key, value, self._allowed_types[message.topic])

    def _state(self, key: bytes) -> ContactEnrollments:
        state: ContactEnrollments | None = self.table.data.get(key)
        return state if state is not None else {}

    def _on_enrollment_event(self, item: _Item, event: Event, message: Any) -> None:
        self.counters.enrollment_events += 1
        state = self._state(message.key)
        changed = enrollments.apply(state, event)
        if changed and event.type == ENROLLED:
            enrollment_id = event.data["enrollment_id"]
            self._match_recent(item, message.key, enrollment_id, state[enrollment_id])
        changed |= enrollments.prune(state, time.time(), self._grace_seconds)
        if changed:
            _store(item, self.table, message.key, state or None, message.partition)
        exited = event.type == EXITED
        # The projection is upserted even when state did not change: state reaches the
        # changelog on its own schedule and may be ahead of the database after a crash.
        item.changes.append(
            storage.EnrollmentChange(
                enrollment_id=event.data["enrollment_id"],
                account_id=event.account_id,
                workflow_id=event.data["workflow_id"],
                contact_id=event.contact_id,
                enrolled_at=None if exited else event.occurred_at,
                exited_at=event.occurred_at if exited else None,
                exit_reason=event.data["reason"] if exited else None,
            )
        )
        log.debug(
            "enrollment %s: %s contact=%s workflow=%s event_id=%s",
            event.data["enrollment_id"],
            event.type,
            event.contact_id,
            event.data["workflow_id"],
            event.event_id,
        )

    def _on_contact_event(self, item: _Item, event: Event, message: Any) -> None:
        state = self.table.data.get(message.key)
        if state:
            source = (message.topic, message.partition, message.offset)
            self._achieve(
                item, event, source, match_event(event, state, self.goals.index, self._achieved)
            )
        if self._grace_seconds and self.goals.index.could_achieve(event):
            # Kept for an enrollment of this contact that may still be on its way.
            now = time.time()
            entry = RecentEvent(
                now, message.topic, message.partition, message.offset, message.value
            )
            recent = self.recent.data.get(message.key) or []
            kept = recent_events.keep(recent, entry, now, self._grace_seconds)
            _store(item, self.recent, message.key, kept, message.partition)

    def _match_recent(self, item: _Item, key: bytes, enrollment_id: str, span: Span) -> None:
        """Match the contact's recent events against an enrollment that just arrived."""
        recent = self.recent.data.get(key)
        if not recent:
            return
        candidates = []
        for entry in recent_events.live(recent, time.time(), self._grace_seconds):
            try:
                event = decode(key, entry.value, self._allowed_types.get(entry.topic, frozenset()))
            except InvalidRecord:
                continue  # the topic was renamed since; the record no longer belongs here
            candidates.append((event.occurred_at, entry, event))
        # The earliest event that meets a goal is the one that achieved it.
        for _, entry, event in sorted(candidates, key=lambda c: c[0]):
            matches = match_event(event, {enrollment_id: span}, self.goals.index, self._achieved)
            if matches:
                log.info(
                    "enrollment %s achieved by event_id=%s, which arrived before the enrollment",
                    enrollment_id,
                    event.event_id,
                )
                self._achieve(item, event, (entry.topic, entry.partition, entry.offset), matches)
                return

    def _achieve(
        self, item: _Item, event: Event, source: tuple[str, int, int], matches: list[Match]
    ) -> None:
        topic, partition, offset = source
        for match in matches:
            goal = match.goal
            self._remember_achieved(match.enrollment_id)
            item.candidates.append(
                storage.NewAchievement(
                    enrollment_id=match.enrollment_id,
                    account_id=event.account_id,
                    workflow_id=match.workflow_id,
                    contact_id=event.contact_id,
                    goal_id=goal.id,
                    goal_type=GOAL_TYPE_OF_EVENT[event.type].value,
                    achieved_at=event.occurred_at,
                    trigger_event_id=event.event_id,
                    trigger_event={
                        "event_id": event.event_id,
                        "type": event.type,
                        "occurred_at": event.occurred_at.isoformat(),
                        "topic": topic,
                        "partition": partition,
                        "offset": offset,
                        "goal_version": goal.version,
                        "data": _jsonable(dict(event.data)),
                    },
                )
            )
            log.debug(
                "goal %s (%s) met: enrollment=%s contact=%s event_id=%s",
                goal.id,
                goal.goal_type.value,
                match.enrollment_id,
                event.contact_id,
                event.event_id,
            )

    def forget_expired_recent_events(self) -> int:
        """Drop expired recent events of contacts that went quiet; return how many contacts.

        Memory only: writing tombstones needs the partition of a live record, so the changelog
        keeps them until the contact is seen again, and a restart reads them back to drop
        them once more.
        """
        now, store = time.time(), self.recent.data
        stale = [
            k for k, v in list(store.items()) if not recent_events.live(v, now, self._grace_seconds)
        ]
        for key in stale:
            store.pop(key, None)
        return len(stale)

    def _remember_achieved(self, enrollment_id: str) -> None:
        if len(self._achieved) >= ACHIEVED_CACHE_SIZE:
            # Forget the oldest half; forgotten ones cost one conflicting insert if seen again.
            for stale in list(self._achieved)[: ACHIEVED_CACHE_SIZE // 2]:
                del self._achieved[stale]
        self._achieved[enrollment_id] = None

    # -- per batch, durable effects ----------------------------------------------------------

    def batch_due(self) -> bool:
        """True when the pending batch is full, or has waited long enough for an idle writer.

        While the writer is busy the batch keeps filling (up to full, when the hand-over
        waits for the writer): batches grow with the load and stay small when it is light.
        """
        batch = self._batch
        if not batch:
            return False
        if len(batch) >= self.settings.batch_max_events:
            return True
        if self._writer is not None and not self._writer.done():
            return False
        return (time.monotonic() - batch[0].received) * 1000 >= self.settings.batch_max_wait_ms

    async def submit(self) -> None:
        """Hand the pending batch to the writer and return while it is written.

        One batch is written while the next one fills: the consume loop keeps going during
        the database and Kafka round trips of the batch before. Batches are written in
        order; this waits for the one before to finish first (and raises its failure).
        """
        async with self._flush_lock:
            batch, self._batch = self._batch, []
            if not batch:
                return
            await self._join_writer()
            self._writer = asyncio.ensure_future(self._write_and_ack(batch))
            self._writer.add_done_callback(self._writer_done)

    def _writer_done(self, writer: asyncio.Future[None]) -> None:
        """A batch is written: hand over the next one if it is due (a failure is left for
        the consume loop to raise)."""
        if writer.cancelled() or writer.exception() is not None:
            _log_writer_failure(writer)
            return
        self._hand_over_if_due()

    def _arm_batch_timer(self) -> None:
        """Make sure the pending batch is looked at once its oldest record is due."""
        if self._batch_timer is not None or not self._batch:
            return
        due = self._batch[0].received + self.settings.batch_max_wait_ms / 1000
        self._batch_timer = asyncio.get_running_loop().call_later(
            max(due - time.monotonic(), 0.0), self._batch_timer_fired
        )

    def _batch_timer_fired(self) -> None:
        self._batch_timer = None
        self._hand_over_if_due()

    def _hand_over_if_due(self) -> None:
        """Hand the pending batch to an idle writer once it is due, without waiting for the
        next record. A busy writer hands it over itself when it finishes; a failed one is
        left alone, so the consume loop raises its failure on its next hand-over."""
        writer = self._writer
        if self.stream is None or not self._batch:
            return
        if writer is not None and (not writer.done() or writer.cancelled() or writer.exception()):
            return
        if self.batch_due():
            self._handover = asyncio.ensure_future(self.submit())
            self._handover.add_done_callback(_log_writer_failure)
        else:
            self._arm_batch_timer()

    async def flush(self) -> None:
        """Make every pending and in-flight effect durable and ack their events."""
        await self.submit()
        async with self._flush_lock:
            await self._join_writer()
        await self.mark_published()

    async def _join_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer

    async def _write_and_ack(self, batch: list[_Item]) -> None:
        await self._write(batch)
        # Reached only when every effect is durable: a failure above leaves these offsets
        # uncommitted, so the records come back.
        offsets = self.offsets
        for item in batch:
            if item.counts:
                message = item.event.message
                offsets.durable(message.tp, message.offset + 1)
        self._maybe_log_progress()

    # -- delivery watch ---------------------------------------------------------------------

    async def delivery_stalled(self) -> str | None:
        """Describe the fault when faust has handed over no record for
        ``stall_exit_seconds`` while partitions this worker holds have records waiting
        (outside rebalancing and state recovery); None when all is well."""
        limit, since = self.settings.stall_exit_seconds, self._waiting_since
        if not limit or since is None or time.monotonic() - since < limit:
            return None
        tables: Any = self.app.tables
        if self.app.rebalancing or tables.recovery.in_recovery:
            self._waiting_since = time.monotonic()  # a legitimate wait; start counting anew
            return None
        try:
            ends = await topics.end_offsets(
                self.settings.kafka_bootstrap, self.settings.input_topics
            )
        except Exception as exc:  # the broker being away is not the fault looked for here
            log.debug("delivery watch could not read end offsets: %s", exc)
            return None
        waiting = self.offsets.waiting(ends)
        if not waiting or self._waiting_since != since:
            return None  # nothing waits, or a record came in while the offsets were read
        first: Any = sorted(waiting, key=str)[0]
        return (
            f"faust has handed over no record for {time.monotonic() - since:.0f}s while "
            f"{sum(waiting.values())} records wait on {len(waiting)} held partitions (first: "
            f"{first.topic}[{first.partition}] from offset {self.offsets.expected(first)})"
        )

    # -- offsets: seen, durable, committed -------------------------------------------------

    def on_assigned(self, assigned: Iterable[Any]) -> None:
        """Partitions assigned: hold them, and learn in the background where each input
        partition starts (its committed offset, or the log start).

        The lookup runs outside faust's rebalance callback, which should not wait on the
        network; records that come before it is done count once it is (see offsets.py).
        """
        inputs = set(self.settings.input_topics)
        tps = [tp for tp in assigned if tp.topic in inputs]
        self.offsets.assign(tps)
        if tps:
            self._starting = asyncio.ensure_future(self._learn_starts(tps))
            self._starting.add_done_callback(_log_start_failure)

    async def _learn_starts(self, tps: list[Any]) -> None:
        bootstrap, group = self.settings.kafka_bootstrap, self.settings.group_id
        starts = await self._retrying(
            "read committed offsets", lambda: topics.start_offsets(bootstrap, group, tps)
        )
        for tp in tps:
            start = starts.get((tp.topic, tp.partition))
            if start is None:
                log.warning("no starting offset known for %s; its offsets stay uncommitted", tp)
                continue
            early_end = self.offsets.start(tp, start)
            if early_end is not None:
                why = "came before the partition's starting offset was known"
                await self._fill_hole(tp, early_end, why)

    async def on_revoked(self, revoked: Iterable[Any]) -> None:
        """Partitions revoked: make the pending work durable, commit it, forget them."""
        if self._starting is not None:
            self._starting.cancel()
            self._starting = None
        await self.flush()
        await self.commit()
        self.offsets.revoke(revoked)

    async def commit(self) -> None:
        """Commit every input partition's durable offset that moved (changelog flushed first)."""
        offsets = self.offsets.to_commit()
        if not offsets:
            return
        # The state changes of these records were written with their batches already, so
        # the commit goes straight to the consumer (not through faust's commit path, whose
        # producer flush waits for an empty buffer and never returns under steady writes).
        consumer: Any = self.app.consumer
        if await consumer._commit(offsets):
            self.offsets.committed(offsets)

    async def flush_before_stop(self) -> None:
        """Flush the pending batch on the way out, for a bounded time, and commit what is
        durable; what is not stays uncommitted and is handed back."""
        pending = len(self._batch)
        if pending or self._writer is not None:
            log.info(
                "stopping: flushing %d pending records first%s",
                pending,
                " and the batch being written" if self._writer is not None else "",
            )
        try:
            await asyncio.wait_for(self.flush(), timeout=SHUTDOWN_FLUSH_SECONDS)
            await asyncio.wait_for(self.commit(), timeout=SHUTDOWN_FLUSH_SECONDS)
        except Exception as exc:
            log.warning(
                "stopping without flushing and committing %d records (%r); their offsets "
                "stay uncommitted and the next owner of their partitions processes them again",
                pending,
                exc,
            )

    async def _write(self, batch: list[_Item]) -> None:
        """Make a batch's effects durable: its state changes to the changelog and its rows to
        PostgreSQL side by side, then its exit commands and dead letters to Kafka."""
        if any(item.changelog for item in batch):
            state = self._retrying("write state changes", lambda: self._send_changelog(batch))
            _, pending = await asyncio.gather(state, self._store_rows(batch))
        else:
            pending = await self._store_rows(batch)
        await self._retrying("publish", lambda: self._publish(batch, pending))
        self._unmarked += [r["enrollment_id"] for r in pending]
        self.counters.exits_published += len(pending)

    async def _store_rows(self, batch: list[_Item]) -> list[dict[str, Any]]:
        """Write the batch's enrollment changes and achievements in one transaction, with the
        published marks of the batches before; return the exit commands to publish."""
        if not any(item.changes or item.candidates for item in batch):
            return []
        marks, self._unmarked = self._unmarked, []
        try:
            return await self._retrying("record batch", lambda: self._record(batch, marks))
        except sqlalchemy.exc.DBAPIError as exc:
            self._unmarked = marks + self._unmarked
            log.warning(
                "PostgreSQL rejected a batch of %d records (%s); retrying them one by one "
                "to find the record at fault",
                len(batch),
                exc.orig,
            )
            return await self._record_one_by_one(batch)
        except BaseException:
            self._unmarked = marks + self._unmarked
            raise

    async def mark_published(self) -> None:
        """Mark the exit commands published that no transaction has marked yet (one try; the
        sweep republishes, with the same command id, any that stay unmarked)."""
        marks, self._unmarked = self._unmarked, []
        if not marks:
            return
        try:
            await storage.mark_published(self.engine, marks)
        except Exception as exc:
            self._unmarked = marks + self._unmarked
            log.warning(
                "marking %d exit commands published failed: %s; will retry", len(marks), exc
            )

    async def _record(
        self, batch: Iterable[_Item], published: list[str] | None = None
    ) -> list[dict[str, Any]]:
        changes = [c for item in batch for c in item.changes]
        candidates = [a for item in batch for a in item.candidates]
        rows = await storage.record_batch(self.engine, changes, candidates, published or ())
        self.counters.achievements += len(candidates)
        return rows

    async def _record_one_by_one(self, batch: list[_Item]) -> list[dict[str, Any]]:
        pending: list[dict[str, Any]] = []
        for item in batch:
            if not (item.changes or item.candidates):
                continue
            try:
                pending += await self._retrying("record one", partial(self._record, [item]))
            except sqlalchemy.exc.DBAPIError as exc:
                message = item.event.message
                item.rejection = f"PostgreSQL rejected its effects: {str(exc.orig).strip()}"
                log.error(
                    "record topic=%s partition=%d offset=%d event_id=%s could not be stored; "
                    "it goes to the dead-letter topic",
                    message.topic,
                    message.partition,
                    message.offset,
                    item.event_id,
                    exc_info=exc,
                )
        return pending

    async def sweep_unpublished(self) -> int:
        """Publish exit commands recorded but never published; return how many."""
        rows = await self._retrying(
            "find unpublished exits",
            lambda: storage.unpublished_achievements(
                self.engine, self.settings.sweep_min_age_seconds, limit=1000
            ),
        )
        if not rows:
            return 0
        await self._retrying("publish swept exits", lambda: self._publish([], rows))
        await self._retrying(
            "mark swept exits published",
            lambda: storage.mark_published(self.engine, (r["enrollment_id"] for r in rows)),
        )
        self.counters.exits_published += len(rows)
        log.warning(
            "published %d exit commands that were recorded but never published (first: "
            "enrollment=%s command=%s)",
            len(rows),
            rows[0]["enrollment_id"],
            rows[0]["command_id"],
        )
        return len(rows)

    async def _send_changelog(self, batch: list[_Item]) -> None:
        """Write the batch's state changes to the changelog topics, awaiting Kafka's acks, so
        that no offset is committed ahead of the state it produced."""
        producer = self.app.producer
        futures = [
            await producer.send(topic, key, value, partition, None, None)
            for item in batch
            for topic, partition, key, value in item.changelog
        ]
        await asyncio.gather(*futures)

    async def _publish(self, batch: list[_Item], pending: list[dict[str, Any]]) -> None:
        producer = self.app.producer
        settings = self.settings
        futures = []
        for row in pending:
            futures.append(
                await producer.send(
                    settings.topic_exit,
                    row["contact_id"].encode(),
                    exit_command(row),
                    None,
                    None,
                    None,
                )
            )
        for item in batch:
            if item.rejection is None:
                continue
            m = item.event.message
            headers = (
                [*(m.headers or ())]
                if isinstance(m.headers, list)
                else list((m.headers or {}).items())
            )
            headers += dead_letter_headers(
                item.rejection, m.topic, m.partition, m.offset, item.event_id
            )
            futures.append(
                await producer.send(settings.topic_dead_letter, m.key, m.value, None, None, headers)
            )
            self.counters.dead_letters += 1
        if futures:
            await asyncio.gather(*futures)

    async def _retrying(self, what: str, action: Callable[[], Awaitable[T]]) -> T:
        """Run ``action`` until it succeeds or fails for good; back off while it cannot."""
        delay = 0.2
        while True:
            try:
                return await action()
            except Exception as exc:
                if not _retryable(exc):
                    raise
                log.warning("%s failed: %s; will retry in %.1fs", what, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max_seconds)

    def _maybe_log_progress(self) -> None:
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_EVERY_SECONDS:
            self._last_progress = now
            c = self.counters
            log.info(
                "progress: consumed=%d enrollment_events=%d achievements=%d exits_published=%d "
                "dead_letters=%d active_goals=%d",
                c.consumed,
                c.enrollment_events,
                c.achievements,
                c.exits_published,
                c.dead_letters,
                len(self.goals.index),
            )


@dataclass(frozen=True, slots=True)
class _RefetchedMessage:
    """A record read directly after faust skipped it, shaped like faust's message."""

    tp: Any
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    @classmethod
    def of(cls, tp: Any, record: Any) -> _RefetchedMessage:
        return cls(
            tp,
            tp.topic,
            tp.partition,
            record.offset,
            record.key,
            record.value,
            list(record.headers or ()),
        )


@dataclass(frozen=True, slots=True)
class _Refetched:
    """Stands in for a faust event around a record read directly."""

    message: _RefetchedMessage


def _log_start_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error(
            "could not learn where the assigned partitions start; their offsets stay "
            "uncommitted until the next assignment",
            exc_info=task.exception(),
        )


def _log_writer_failure(writer: asyncio.Future[None]) -> None:
    """Log a failed batch write when it happens; the consume loop raises it on its next
    hand-over, which stops the agent with the batch unacked."""
    if not writer.cancelled() and writer.exception() is not None:
        log.error("writing a batch failed; its records stay unacked", exc_info=writer.exception())


def _store(item: _Item, table: Any, key: bytes, value: Any, partition: int) -> None:
    """Set (or, for None, delete) a contact's value now; its changelog record goes out with
    the item's batch, before the batch's offsets count as done.

    The partition is the one the triggering record came from: contact state lives in the
    same partition number as the contact's input records, whichever worker owns it.
    """
    # NOTE: keys written this way are not dropped from memory when their partition moves to
    # another worker (faust tracks that only for keys it recovered), which costs memory until
    # the next restart, never correctness: a regained partition is replayed in full.
    topic = table.changelog_topic.get_topic_name()
    if value is None:
        table.data.pop(key, None)
        item.changelog.append((topic, partition, key, None))
    else:
        table.data[key] = value
        item.changelog.append((topic, partition, key, table.value_serializer.dumps(value)))

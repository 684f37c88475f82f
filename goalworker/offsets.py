"""Which input offsets may be committed: only those whose records were all seen and made durable.

goalworker commits its input offsets itself rather than through faust's acks. faust can drop
records it already fetched (its stream buffer is cleared when the flow resumes after state
recovery) and its commit bookkeeping can then count the hole as done ("gaps"), committing
past records that were never processed. Here an offset counts only when every record before
it on the partition, from the committed offset the partition was assigned at, was handed to
the worker; a record further on than the next expected one is a hole, which the caller fills
by reading the missing range itself before it goes on.

Pure bookkeeping, no I/O: the caller reads, and commits.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum


class Seen(Enum):
    """What a record's offset means to its partition's ledger."""

    #: The next expected record: it counts towards the commit once its batch is durable.
    NEXT = "next"
    #: Before the next expected one (a repeat), or before the starting offset is known:
    #: processed (effects are idempotent) but it does not move the commit.
    AGAIN = "again"
    #: Further on than the next expected one: records were skipped. The ledger is unchanged;
    #: the caller reads the records from ``expected`` on, hands them over, then this one.
    HOLE = "hole"
    #: A partition this worker does not hold (a record left over from before a rebalance):
    #: not processed; the partition's owner handles it.
    NOT_OURS = "not_ours"


@dataclass(slots=True)
class _Partition:
    #: The next offset to hand to the worker; None until the starting offset is known.
    expected: int | None = None
    #: Everything below this offset is durable: the offset to commit.
    durable: int | None = None
    #: The offset last committed (or assigned at).
    committed: int | None = None
    #: The furthest offset handed over before the starting offset was known.
    early: int | None = None


class OffsetLedger:
    """Per partition: the next expected offset, what is durable, what is committed."""

    def __init__(self) -> None:
        self._parts: dict[Hashable, _Partition] = {}

    def assign(self, tps: Iterable[Hashable]) -> None:
        """Partitions now held; their starting offsets follow through :meth:`start`."""
        for tp in tps:
            self._parts.setdefault(tp, _Partition())

    def revoke(self, tps: Iterable[Hashable]) -> None:
        """Partitions no longer held: forget them."""
        for tp in tps:
            self._parts.pop(tp, None)

    def start(self, tp: Hashable, offset: int) -> int | None:
        """Set the partition's starting offset (its committed offset, or the log start).

        Records handed over before the start was known did not count. Returns the offset
        just past the furthest of them when that lies beyond the start: the caller reads the
        range from the start to it again (as for a hole), since nothing may come after them.
        """
        part = self._parts.get(tp)
        if part is None:
            return None
        part.expected = part.durable = part.committed = offset
        early, part.early = part.early, None
        return early + 1 if early is not None and early >= offset else None

    def seen(self, tp: Hashable, offset: int) -> Seen:
        """Classify a record handed to the worker; see :class:`Seen`."""
        part = self._parts.get(tp)
        if part is None:
            return Seen.NOT_OURS
        expected = part.expected
        if expected is None:
            part.early = offset if part.early is None else max(part.early, offset)
            return Seen.AGAIN
        if offset < expected:
            return Seen.AGAIN
        if offset == expected:
            part.expected = offset + 1
            return Seen.NEXT
        return Seen.HOLE

    def skip_to(self, tp: Hashable, offset: int) -> None:
        """The partition holds no records before ``offset`` that were not handed over (a real
        gap, such as transaction markers leave): expect ``offset`` next."""
        part = self._parts.get(tp)
        if part is not None and part.expected is not None and offset > part.expected:
            part.expected = offset

    def expected(self, tp: Hashable) -> int | None:
        """The next offset the partition should hand over (where a hole starts)."""
        part = self._parts.get(tp)
        return None if part is None else part.expected

    def waiting(self, ends: Mapping[Hashable, int]) -> dict[Hashable, int]:
        """Per held partition with a known start: how many records the log holds (up to
        ``ends``, its end offsets) beyond those handed over, where there are any."""
        return {
            tp: ends[tp] - p.expected
            for tp, p in self._parts.items()
            if p.expected is not None and ends.get(tp, 0) > p.expected
        }

    def durable(self, tp: Hashable, next_offset: int) -> None:
        """Records of ``tp`` below ``next_offset`` that counted are durable now."""
        part = self._parts.get(tp)
        if part is not None and part.durable is not None and next_offset > part.durable:
            part.durable = next_offset

    def to_commit(self) -> dict[Hashable, int]:
        """Partitions whose durable offset moved past the committed one, with that offset."""
        return {
            tp: p.durable
            for tp, p in self._parts.items()
            if p.durable is not None and p.committed is not None and p.durable > p.committed
        }

    def committed(self, offsets: dict[Hashable, int]) -> None:
        """Record a successful commit of ``offsets``."""
        for tp, offset in offsets.items():
            part = self._parts.get(tp)
            if part is not None and part.committed is not None and offset > part.committed:
                part.committed = offset

"""The offset ledger: only offsets whose records were all seen and made durable are committed."""

from __future__ import annotations

from goalworker.offsets import OffsetLedger, Seen

TP = ("contact.tag.added", 3)
OTHER = ("contact.tag.added", 4)


def started(offset: int = 10) -> OffsetLedger:
    ledger = OffsetLedger()
    ledger.assign([TP])
    ledger.start(TP, offset)
    return ledger


def test_contiguous_records_count_and_only_durable_ones_are_committed():
    ledger = started(10)
    assert [ledger.seen(TP, o) for o in (10, 11, 12)] == [Seen.NEXT] * 3
    assert ledger.to_commit() == {}

    ledger.durable(TP, 12)

    assert ledger.to_commit() == {TP: 12}
    ledger.committed({TP: 12})
    assert ledger.to_commit() == {}
    ledger.durable(TP, 13)
    assert ledger.to_commit() == {TP: 13}


def test_a_hole_changes_nothing_until_the_missing_records_are_handed_over():
    ledger = started(10)
    assert ledger.seen(TP, 10) is Seen.NEXT

    assert ledger.seen(TP, 14) is Seen.HOLE
    assert ledger.expected(TP) == 11
    assert ledger.seen(TP, 14) is Seen.HOLE  # still a hole: nothing was filled

    # The caller reads 11 to 13 itself, then hands over 14 again.
    assert [ledger.seen(TP, o) for o in (11, 12, 13, 14)] == [Seen.NEXT] * 4
    assert ledger.expected(TP) == 15


def test_a_real_gap_in_the_log_is_skipped_only_when_the_caller_says_so():
    ledger = started(10)
    assert ledger.seen(TP, 12) is Seen.HOLE
    ledger.skip_to(TP, 12)
    assert ledger.seen(TP, 12) is Seen.NEXT
    ledger.skip_to(TP, 5)  # never backwards
    assert ledger.expected(TP) == 13


def test_repeats_do_not_count():
    ledger = started(0)
    for offset in range(5):
        assert ledger.seen(TP, offset) is Seen.NEXT
    assert ledger.seen(TP, 2) is Seen.AGAIN
    assert ledger.seen(TP, 5) is Seen.NEXT


def test_records_of_a_partition_not_held_are_not_ours():
    ledger = started(0)
    assert ledger.seen(OTHER, 0) is Seen.NOT_OURS
    ledger.revoke([TP])
    assert ledger.seen(TP, 0) is Seen.NOT_OURS
    assert ledger.to_commit() == {}


def test_records_before_the_start_is_known_do_not_count_and_are_read_again():
    ledger = OffsetLedger()
    ledger.assign([TP])
    assert ledger.expected(TP) is None
    assert ledger.seen(TP, 5) is Seen.AGAIN
    assert ledger.seen(TP, 6) is Seen.AGAIN
    assert ledger.to_commit() == {}

    # The range from the start to past the furthest early record is to be read again.
    assert ledger.start(TP, 5) == 7
    assert ledger.expected(TP) == 5
    assert ledger.seen(TP, 7) is Seen.HOLE


def test_early_records_before_the_start_ask_for_nothing():
    ledger = OffsetLedger()
    ledger.assign([TP])
    ledger.seen(TP, 3)
    assert ledger.start(TP, 9) is None
    assert ledger.seen(TP, 9) is Seen.NEXT


def test_durable_never_moves_backwards_and_commits_never_regress():
    ledger = started(0)
    for offset in range(4):
        ledger.seen(TP, offset)
    ledger.durable(TP, 4)
    ledger.durable(TP, 2)
    assert ledger.to_commit() == {TP: 4}
    ledger.committed({TP: 4})
    ledger.committed({TP: 1})
    assert ledger.to_commit() == {}


def test_a_partition_assigned_again_starts_afresh_from_its_committed_offset():
    ledger = started(0)
    ledger.seen(TP, 0)
    ledger.durable(TP, 1)
    ledger.committed({TP: 1})
    ledger.revoke([TP])

    ledger.assign([TP])
    ledger.start(TP, 1)

    assert ledger.seen(TP, 3) is Seen.HOLE
    assert ledger.expected(TP) == 1


def test_waiting_counts_records_beyond_those_handed_over_on_held_partitions_only():
    ledger = OffsetLedger()
    ledger.assign(["a", "b", "c"])
    ledger.start("a", 10)
    ledger.start("b", 0)
    assert ledger.seen("a", 10) is Seen.NEXT
    # "c" has no known start yet; "d" is not held.
    assert ledger.waiting({"a": 15, "b": 0, "c": 99, "d": 7}) == {"a": 4}
    assert ledger.waiting({"a": 11, "b": 0}) == {}

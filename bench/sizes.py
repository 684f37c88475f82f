"""The benchmark sizes: tiny (for the test), quick (``make bench``) and full (``--full``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Size:
    """How big one benchmark run is."""

    name: str
    #: Contact events pre-produced over the five event topics.
    events: int
    contacts: int
    #: Active enrollments of the main stream, all in workflows that have a goal.
    enrollments: int
    #: Active enrollments of the enrollment-state scaling run (the main ones plus idle ones).
    large_enrollments: int
    partitions: int
    #: Repetitions of every measured figure; the report gives their median.
    runs: int
    #: Goals added for the goal-count scaling run, on top of the ten the stream meets.
    extra_goals: int
    #: Steady rate of the first latency step, in events per second.
    latency_rate: int
    #: Length of one latency run, in seconds.
    latency_seconds: float
    #: Longest the naive design is measured for in one run, in seconds (it reads a prefix).
    naive_max_seconds: float
    #: Longest any one phase may wait for a worker, in seconds.
    timeout_seconds: float


TINY = Size(
    name="tiny",
    events=3_000,
    contacts=1_000,
    enrollments=500,
    large_enrollments=2_000,
    partitions=4,
    runs=1,
    extra_goals=990,
    latency_rate=200,
    latency_seconds=3.0,
    naive_max_seconds=5.0,
    timeout_seconds=120.0,
)

QUICK = Size(
    name="quick",
    events=60_000,
    contacts=10_000,
    enrollments=5_000,
    large_enrollments=50_000,
    partitions=12,
    runs=3,
    extra_goals=99_990,
    latency_rate=1_000,
    latency_seconds=10.0,
    naive_max_seconds=12.0,
    timeout_seconds=300.0,
)

FULL = Size(
    name="full",
    events=1_000_000,
    contacts=100_000,
    enrollments=50_000,
    large_enrollments=2_000_000,
    partitions=12,
    runs=3,
    extra_goals=99_990,
    latency_rate=1_000,
    latency_seconds=60.0,
    naive_max_seconds=120.0,
    timeout_seconds=1_800.0,
)

SIZES = {s.name: s for s in (TINY, QUICK, FULL)}

"""Workers killed, stopped and added mid-stream: the promise holds through all of it."""

from __future__ import annotations

import random
import threading
import time

import pytest

pytestmark = pytest.mark.integration

#: Each fault test runs short in `make test` and long in `make test-faults` (marker `faults`).
SIZES = ["short", pytest.param("long", marks=pytest.mark.faults)]


def _feed_events_in_background(run) -> threading.Thread:
    thread = threading.Thread(target=run.send, args=(run.plan.event_records,), daemon=True)
    thread.start()
    return thread


def _enrollments_first(run) -> None:
    run.send(run.plan.enrollment_records)
    run.wait_caught_up(120, [run.settings.topic_enrollment])


@pytest.mark.parametrize("size", SIZES)
def test_workers_killed_at_random_moments_lose_and_duplicate_nothing(fault_run, size):
    long = size == "long"
    kills = 12 if long else 3
    run = fault_run(contacts=8000 if long else 1500)
    rng = random.Random(kills)
    run.workers.start()
    run.workers.start()
    _enrollments_first(run)

    feeder = _feed_events_in_background(run)
    done = 0
    while done < kills:
        time.sleep(rng.uniform(0.5, 2.5))
        run.workers.kill_one(rng)
        run.workers.start()
        done += 1
    feeder.join(timeout=300)
    run.wait_caught_up(300)

    report = run.check()
    assert report.ok, "\n".join(report.lines())
    assert report.achievements == sum(len(v) for v in run.plan.expected_achieved.values())
    assert run.workers.crashed() == []


@pytest.mark.parametrize("size", SIZES)
def test_a_worker_stopped_with_sigterm_exits_promptly_and_hands_its_work_back(fault_run, size):
    run = fault_run(contacts=8000 if size == "long" else 1500)
    rng = random.Random(3)
    run.workers.start()
    _enrollments_first(run)
    feeder = _feed_events_in_background(run)
    time.sleep(1.0)
    took = run.workers.stop_one(rng)
    assert run.workers.procs[0].returncode == 0
    run.workers.start()
    feeder.join(timeout=300)
    run.wait_caught_up(300)

    report = run.check()
    assert report.ok, "\n".join(report.lines())
    assert took < 30, f"SIGTERM took {took:.1f}s"


@pytest.mark.parametrize("size", SIZES)
def test_workers_joining_and_leaving_mid_stream_keep_the_promise(fault_run, size):
    long = size == "long"
    run = fault_run(contacts=8000 if long else 1500)
    rng = random.Random(5)
    run.workers.start()
    _enrollments_first(run)
    feeder = _feed_events_in_background(run)
    for step in range(8 if long else 3):
        time.sleep(rng.uniform(1.0, 3.0))
        if step % 2 == 0 or len(run.workers.alive) < 2:
            run.workers.start()
        else:
            run.workers.stop_one(rng)
    feeder.join(timeout=300)
    run.wait_caught_up(300)

    report = run.check()
    assert report.ok, "\n".join(report.lines())
    assert run.workers.crashed() == []

"""The benchmark runs end to end at a tiny size and writes its report; no figure is judged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent

#: Summary figures every run must produce as positive numbers. The marginal memory per
#: enrollment is left out: at the tiny size it is within the noise and may come out negative.
POSITIVE = [
    "ceiling_bytes_events_per_s",
    "ceiling_json_events_per_s",
    "faust_floor_events_per_s",
    "ratio_to_faust_floor",
    "naive_events_per_s",
    "goalworker_events_per_s",
    "ratio_to_ceiling_json",
    "ratio_to_naive",
    "goalworker_100k_goals_events_per_s",
    "goal_count_throughput_ratio",
    "two_processes_events_per_s_per_process",
    "two_process_scaling",
    "large_state_events_per_s",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "latency_half_max_p99_ms",
    "peak_rss_bytes",
    "peak_rss_bytes_large_state",
    "peak_rss_per_active_enrollment_bytes",
]


def test_the_tiny_benchmark_writes_a_json_report_a_table_and_a_chart(tmp_path: Path):
    if not (
        os.environ.get("GOALWORKER_KAFKA_BOOTSTRAP") and os.environ.get("GOALWORKER_DATABASE_URL")
    ):
        pytest.fail("the benchmark needs Kafka and PostgreSQL: run it through `make test`")

    run = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
    )

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["machine"]["cores"] >= 1
    assert len(results["machine"]["load_average_start"]) == 3
    summary = results["summary"]
    not_positive = {k: summary.get(k) for k in POSITIVE if not summary.get(k, 0) > 0}
    assert not not_positive, not_positive
    assert isinstance(summary["bytes_per_active_enrollment"], float)
    assert {t["target"].split()[0] for t in results["targets"]} >= {"goalworker", "p99"}
    table = (tmp_path / "results.md").read_text()
    for heading in ("events/s per process", "ratio to ceiling", "ratio to naive", "p99"):
        assert heading in table
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

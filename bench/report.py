"""The report of a run: ``results.json``, the Markdown table ``results.md`` and ``chart.png``."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from bench.sizes import Size

#: Table rows: variant key, label. Events/s are per process.
ROWS = [
    ("ceiling_bytes", "ceiling: aiokafka, bytes only"),
    ("ceiling_json", "ceiling: aiokafka + orjson decode"),
    ("faust_floor", "floor of faust: agent decodes and acks only"),
    ("goalworker", "goalworker, 1 process, 10 goals"),
    ("goalworker_100k_goals", "goalworker, 1 process, {scaled_active_goals:,} goals"),
    ("goalworker_two_processes", "goalworker, 2 processes (per process)"),
    ("goalworker_large_state", "goalworker, 1 process, {large_active_enrollments:,} enrollments"),
    ("naive", "naive: PostgreSQL per event"),
]
LATENCY_STEPS = [("latency_steady", "steady"), ("latency_half_max", "half the measured max")]


def _paired_ratio(variants: dict[str, Any], a: str, b: str, key: str = "events_per_s") -> float:
    """Median over repetitions of a/b, each pair measured in the same repetition."""
    runs_a = variants.get(a, {}).get("runs", [])
    runs_b = variants.get(b, {}).get("runs", [])
    ratios = [x[key] / y[key] for x, y in zip(runs_a, runs_b, strict=False) if y[key] > 0]
    return statistics.median(ratios) if ratios else 0.0


def summary(variants: dict[str, Any], size: Size) -> dict[str, float]:
    """The headline figures, each a median over the run's repetitions."""

    def get(variant: str, key: str) -> float:
        return float(variants.get(variant, {}).get(key, 0.0))

    small_rss = get("goalworker", "peak_rss_bytes")
    large_rss = get("goalworker_large_state", "peak_rss_bytes")
    return {
        "ceiling_bytes_events_per_s": get("ceiling_bytes", "events_per_s"),
        "ceiling_json_events_per_s": get("ceiling_json", "events_per_s"),
        "naive_events_per_s": get("naive", "events_per_s"),
        "goalworker_events_per_s": get("goalworker", "events_per_s"),
        "ratio_to_ceiling_json": _paired_ratio(variants, "goalworker", "ceiling_json"),
        "ratio_to_ceiling_bytes": _paired_ratio(variants, "goalworker", "ceiling_bytes"),
        "ratio_to_naive": _paired_ratio(variants, "goalworker", "naive"),
        "faust_floor_events_per_s": get("faust_floor", "events_per_s"),
        "ratio_to_faust_floor": _paired_ratio(variants, "goalworker", "faust_floor"),
        "faust_floor_to_ceiling_json": _paired_ratio(variants, "faust_floor", "ceiling_json"),
        "goalworker_100k_goals_events_per_s": get("goalworker_100k_goals", "events_per_s"),
        "goal_count_throughput_ratio": _paired_ratio(
            variants, "goalworker_100k_goals", "goalworker"
        ),
        "two_processes_events_per_s": get("goalworker_two_processes", "events_per_s"),
        "two_processes_events_per_s_per_process": get(
            "goalworker_two_processes", "events_per_s_per_process"
        ),
        "two_process_scaling": _paired_ratio(variants, "goalworker_two_processes", "goalworker"),
        "large_state_events_per_s": get("goalworker_large_state", "events_per_s"),
        "latency_steady_rate": get("latency_steady", "rate"),
        "latency_p50_ms": get("latency_steady", "p50_ms"),
        "latency_p95_ms": get("latency_steady", "p95_ms"),
        "latency_p99_ms": get("latency_steady", "p99_ms"),
        "latency_half_max_rate": get("latency_half_max", "rate"),
        "latency_half_max_p50_ms": get("latency_half_max", "p50_ms"),
        "latency_half_max_p95_ms": get("latency_half_max", "p95_ms"),
        "latency_half_max_p99_ms": get("latency_half_max", "p99_ms"),
        "peak_rss_bytes": small_rss,
        "peak_rss_bytes_large_state": large_rss,
        "peak_rss_per_active_enrollment_bytes": small_rss / size.enrollments,
        "peak_rss_per_active_enrollment_bytes_large_state": large_rss / size.large_enrollments,
        # What one more enrollment costs: the RSS difference between the two state sizes
        # (0 when a run measured only one of them).
        "bytes_per_active_enrollment": (large_rss - small_rss)
        / (size.large_enrollments - size.enrollments)
        if small_rss and large_rss
        else 0.0,
        "goalworker_cpu_us_per_event": get("goalworker", "cpu_us_per_event"),
        "ceiling_json_cpu_us_per_event": get("ceiling_json", "cpu_us_per_event"),
        "naive_cpu_us_per_event": get("naive", "cpu_us_per_event"),
    }


def targets(s: dict[str, float], w: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and whether it was met (None when
    the run did not measure it)."""

    def target(name: str, value: float, met: bool) -> dict[str, Any]:
        return {"target": name, "value": value, "met": met if value else None}

    return [
        target(
            "goalworker >= 50% of the JSON-decoding ceiling",
            s["ratio_to_ceiling_json"],
            s["ratio_to_ceiling_json"] >= 0.5,
        ),
        target(
            "goalworker >= 10x the naive design", s["ratio_to_naive"], s["ratio_to_naive"] >= 10
        ),
        target(
            f"{w['scaled_active_goals']:,} goals >= 90% of the throughput with 10",
            s["goal_count_throughput_ratio"],
            s["goal_count_throughput_ratio"] >= 0.9,
        ),
        target(
            f"p99 produce-to-exit < 100 ms at {s['latency_steady_rate']:,.0f} events/s",
            s["latency_p99_ms"],
            s["latency_p99_ms"] < 100,
        ),
        target(
            "2 processes >= 1.6x one", s["two_process_scaling"], s["two_process_scaling"] >= 1.6
        ),
    ]


def write(results: dict[str, Any], out: Path) -> None:
    """Write the three report files into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    results = {**results, "targets": targets(results["summary"], results["workload"])}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(markdown(results))
    chart(results, out / "chart.png")


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB" if n else "-"


def _x(n: float) -> str:
    return f"{n:.2f}" if n else "-"


def markdown(results: dict[str, Any]) -> str:
    """The results as Markdown: machine, workload, the main table, latency, targets."""
    m, w, s = results["machine"], results["workload"], results["summary"]
    v = results["variants"]
    load = " / ".join(f"{x:.2f}" for x in m["load_average_start"])
    load_end = " / ".join(f"{x:.2f}" for x in m["load_average_end"])
    lines = [
        f"# goalworker benchmark: {results['size']} size, run {results['run_id']}",
        "",
        f"Machine: {m['cores']} cores, load average (1/5/15 min) {load} at the start and "
        f"{load_end} at the end; Python {m['python']}; {m['platform']}. goalworker at commit "
        f"{results['code']['commit']}"
        + (" with uncommitted changes." if results["code"]["goalworker_changed"] else "."),
        "",
        f"Workload: {w['events']:,} events over five topics, {w['contacts']:,} contacts, "
        f"{w['active_enrollments']:,} active enrollments ({w['large_active_enrollments']:,} in "
        f"the large-state run), {w['partitions']} partitions, {w['active_goals']} active goals "
        f"({w['scaled_active_goals']:,} in the goal-count run), {w['achieving_events']:,} "
        f"achieving events. Every figure is the median of {w['runs']} run(s); ratios are "
        "medians of ratios within one repetition. The naive design is timed over at most "
        f"{w['naive_max_seconds']:.0f} s of the same stream.",
        "",
        "| variant | events/s per process | ratio to ceiling (JSON) | ratio to naive "
        f"| CPU us/event | machine busy, cores of {m['cores']} | latency p50 / p95 / p99 ms at "
        f"{s['latency_steady_rate']:,.0f}/s | peak RSS | memory per active enrollment |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ceiling = s["ceiling_json_events_per_s"]
    naive = s["naive_events_per_s"]
    for key, template in ROWS:
        if key not in v:
            continue
        label = template.format(**w)
        row = v[key]
        rate = row.get("events_per_s_per_process", row["events_per_s"])
        per_enrollment = "-"
        latency = "-"
        if key == "goalworker":
            latency = f"{s['latency_p50_ms']:.1f} / {s['latency_p95_ms']:.1f} / " + (
                f"{s['latency_p99_ms']:.1f}"
            )
            per_enrollment = (
                f"{s['peak_rss_per_active_enrollment_bytes']:,.0f} B (peak RSS / "
                f"{w['active_enrollments']:,})"
            )
        if key == "goalworker_large_state":
            per_enrollment = (
                f"{s['bytes_per_active_enrollment']:,.0f} B (marginal, "
                f"{w['active_enrollments']:,} to {w['large_active_enrollments']:,})"
            )
        lines.append(
            f"| {label} | {rate:,.0f} | {_x(rate / ceiling if ceiling else 0)} | "
            f"{_x(rate / naive if naive else 0)} | {row.get('cpu_us_per_event', 0):.1f} | "
            f"{_x(row.get('machine_busy_cores', 0))} | {latency} | "
            f"{_mib(row.get('peak_rss_bytes', 0))} | {per_enrollment} |"
        )
    lines += [
        "",
        "Latency, produce to exit command on `workflow.exit`, goalworker 1 process:",
        "",
        "| step | events/s sent | p50 ms | p95 ms | p99 ms | max ms | exits timed | missing |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in LATENCY_STEPS:
        if key in v:
            r = v[key]
            lines.append(
                f"| {label} | {r['rate']:,.0f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
                f"{r['p99_ms']:.1f} | {r['max_ms']:.1f} | {r['samples']:.0f} | "
                f"{r['missing']:.0f} |"
            )
    lines += [
        "",
        "| scaling | value |",
        "|---|---:|",
        f"| throughput, {w['scaled_active_goals']:,} goals / 10 goals "
        f"| {s['goal_count_throughput_ratio']:.2f} |",
        f"| throughput, 2 processes / 1 process (whole group) | {s['two_process_scaling']:.2f} |",
        f"| goalworker / JSON ceiling (same repetition) | {s['ratio_to_ceiling_json']:.2f} |",
        f"| goalworker / faust floor (same repetition) | {s['ratio_to_faust_floor']:.2f} |",
        f"| faust floor / JSON ceiling (same repetition) "
        f"| {s['faust_floor_to_ceiling_json']:.2f} |",
        f"| goalworker / naive (same repetition) | {s['ratio_to_naive']:.1f} |",
        f"| memory per active enrollment, marginal | {s['bytes_per_active_enrollment']:,.0f} B |",
        "",
        "| target | measured | met |",
        "|---|---:|---|",
    ]
    for t in results["targets"]:
        met = {True: "yes", False: "no", None: "not measured"}[t["met"]]
        lines.append(f"| {t['target']} | {t['value']:.2f} | {met} |")
    incidents = results.get("incidents", [])
    lines += ["", f"Runs repeated: {len(incidents)}."]
    lines += [f"- {i['run']}: {i['kind']}: {i['detail']}" for i in incidents]
    return "\n".join(lines) + "\n"


def chart(results: dict[str, Any], path: Path) -> None:
    """Throughput per variant and latency percentiles, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v, s, w = results["variants"], results["summary"], results["workload"]
    rows = [(label.format(**w), v[key]) for key, label in ROWS if key in v]
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5.5), width_ratios=(3, 2))
    labels = [label for label, _ in rows]
    rates = [r.get("events_per_s_per_process", r["events_per_s"]) for _, r in rows]
    colors = [
        "#9e9e9e" if "ceiling" in lb or "floor" in lb else "#d9534f" if "naive" in lb else "#337ab7"
        for lb in labels
    ]
    bars = left.barh(labels, rates, color=colors)
    left.bar_label(bars, labels=[f"{r:,.0f}" for r in rates], padding=3, fontsize=8)
    if any(rates):
        left.set_xscale("log")
    left.invert_yaxis()
    left.set_xlabel("events per second per process (log scale)")
    left.set_title("Throughput")

    steps = [(label, v[key]) for key, label in LATENCY_STEPS if key in v]
    width = 0.25
    for i, (pct, color) in enumerate((("p50", "#5bc0de"), ("p95", "#f0ad4e"), ("p99", "#d9534f"))):
        xs = [j + (i - 1) * width for j in range(len(steps))]
        heights = [r[f"{pct}_ms"] for _, r in steps]
        bars = right.bar(xs, heights, width, label=pct, color=color)
        right.bar_label(bars, labels=[f"{h:.0f}" for h in heights], fontsize=8)
    right.axhline(100, color="black", linestyle="--", linewidth=0.8, label="100 ms target")
    right.set_xticks(
        range(len(steps)), [f"{label}\n{r['rate']:,.0f} events/s" for label, r in steps]
    )
    right.set_ylabel("produce to exit command, ms")
    right.set_title("Latency, goalworker 1 process")
    right.legend(fontsize=8)
    m = results["machine"]
    fig.suptitle(
        f"goalworker benchmark ({results['size']}, run {results['run_id']}): "
        f"{m['cores']} cores, load {m['load_average_start'][0]:.2f} at start; "
        f"{w['scaled_active_goals']:,}/10 goals {s['goal_count_throughput_ratio']:.2f}, "
        f"2/1 processes {s['two_process_scaling']:.2f}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

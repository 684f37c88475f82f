"""Memory and CPU of a process, read from /proc (Linux)."""

from __future__ import annotations

import os

_TICKS = os.sysconf("SC_CLK_TCK")


def peak_rss_bytes(pid: int | str = "self") -> int:
    """The process's peak resident set size (VmHWM), in bytes; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return 0


def cpu_seconds(pid: int | str = "self") -> float:
    """User plus system CPU time the process has used, in seconds; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The command name may hold spaces; the fields after its closing parenthesis do not.
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    # utime and stime are the 14th and 15th fields of the whole line.
    return (int(fields[11]) + int(fields[12])) / _TICKS


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores, everything but idle and
    I/O wait) since boot; its growth over a span, divided by the span, is busy cores."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is inside user already)
    return (sum(fields[:8]) - fields[3] - fields[4]) / _TICKS


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]

"""goalworker as shipped, run as ``python -m goalworker worker`` processes with GOALWORKER_* env."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

from bench import procstat
from bench.kafka import Stalled
from goalworker.app import EXIT_STALLED
from goalworker.demo import settings_env
from goalworker.settings import Settings


class WorkerProcess:
    """One worker process, its log file, and what /proc says about it."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, "the worker has not been started"
        return self.process.pid

    def start(self) -> WorkerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "goalworker", "worker"],
            env=settings_env(self.settings),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    def check_alive(self) -> None:
        """Raise when the worker has exited on its own."""
        if self.process is not None and self.process.poll() is not None:
            if self.process.returncode == EXIT_STALLED:
                # The worker saw faust stop handing it records and left to be restarted.
                raise Stalled(f"worker exited as stalled; see {self.log_path}")
            raise RuntimeError(
                f"worker exited with code {self.process.returncode}; see {self.log_path}"
            )

    def peak_rss_bytes(self) -> int:
        return procstat.peak_rss_bytes(self.pid)

    def cpu_seconds(self) -> float:
        return procstat.cpu_seconds(self.pid)

    def dump_stacks(self) -> None:
        """Append the worker's thread stacks (py-spy, when installed) and asyncio task stacks
        (SIGUSR1, which mode's worker answers with a dump to stderr) to its log."""
        if self.process is None or self.process.poll() is not None:
            return
        with open(self.log_path, "ab") as log:
            log.write(b"\n== the benchmark saw no progress: stacks follow ==\n")
            py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            if Path(py_spy).exists():
                dump = subprocess.run(
                    [py_spy, "dump", "--pid", str(self.pid)], capture_output=True, timeout=60
                )
                log.write(dump.stdout + dump.stderr)
        self.process.send_signal(signal.SIGUSR1)
        time.sleep(2.0)  # the worker writes the task dump from its event loop

    def log_mentions(self, *needles: str) -> bool:
        """True when the worker's log holds any of ``needles``."""
        text = self.log_path.read_text(errors="replace")
        return any(n in text for n in needles)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL if the worker has not stopped after ``timeout`` seconds."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

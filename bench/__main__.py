"""``python -m bench [--full | --tiny] [--only PHASES] [--out DIR] [--runs N] [--keep-topics]``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from pathlib import Path

from bench.runner import PHASES, Bench
from bench.sizes import FULL, QUICK, TINY

DEFAULT_OUT = Path(__file__).resolve().parent / "out"


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark goalworker against a bare-consumer ceiling and a naive design.",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--full", action="store_true", help="the full size (long: an hour or so)")
    which.add_argument("--tiny", action="store_true", help="a size that takes a minute (tests)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report directory")
    parser.add_argument("--runs", type=int, default=None, help="repetitions (default per size)")
    parser.add_argument(
        "--only",
        default=",".join(PHASES),
        help=f"comma-separated phases to run, of {', '.join(PHASES)} (default: all)",
    )
    parser.add_argument(
        "--keep-topics", action="store_true", help="do not delete the run's topics at the end"
    )
    args = parser.parse_args()
    phases = frozenset(p.strip() for p in args.only.split(",") if p.strip())
    if not phases or not phases <= set(PHASES):
        parser.error(f"--only takes phases of {', '.join(PHASES)}; got {args.only!r}")
    size = FULL if args.full else TINY if args.tiny else QUICK
    if args.runs is not None:
        size = dataclasses.replace(size, runs=max(args.runs, 1))
    asyncio.run(Bench(size, args.out, keep_topics=args.keep_topics, phases=phases).run())


if __name__ == "__main__":
    main()

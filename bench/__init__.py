"""Benchmarks of goalworker next to a bare-consumer ceiling and a naive per-event design.

``python -m bench`` (``make bench``) runs every variant on one broker, one database and one
generated stream, and writes ``bench/out/results.json``, ``results.md`` and ``chart.png``.
"""

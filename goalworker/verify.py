"""The invariant check: PostgreSQL's achievements against the exit commands on Kafka.

For a live deployment or after a fault run it reports, and fails on, any of: an achievement
whose exit command is not on the topic (or not marked published), an exit command with no
achievement, copies of one command id that differ, an enrollment with two command ids or two
rows, and (given the expected outcome) lost or extra achievements.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa

from goalworker import storage, topics
from goalworker.settings import Settings


@dataclass
class Report:
    """What the check found; ``ok`` when no invariant is broken."""

    achievements: int = 0
    exit_records: int = 0
    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    @property
    def ok(self) -> bool:
        return not any(self.problems.values())

    def lines(self) -> list[str]:
        """The report as lines of text, problems first, ten examples each."""
        out = [
            f"achievements: {self.achievements}, exit command records: {self.exit_records}",
        ]
        for name, examples in self.problems.items():
            if examples:
                out.append(f"FAIL {name}: {len(examples)} (e.g. {', '.join(examples[:10])})")
        out.append("OK: every invariant holds" if self.ok else "FAILED: see above")
        return out


async def verify(
    settings: Settings,
    *,
    account_prefix: str | None = None,
    expected_enrollments: set[str] | None = None,
) -> Report:
    """Check the invariants for accounts starting with ``account_prefix`` (all when None)."""
    rows = await _achievements(settings, account_prefix)
    records = await topics.read_all(settings.kafka_bootstrap, settings.topic_exit)
    commands: dict[str, set[bytes]] = defaultdict(set)
    for record in records:
        if record.value is None:
            continue
        body = orjson.loads(record.value)
        if account_prefix is None or str(body.get("account_id", "")).startswith(account_prefix):
            commands[str(body.get("command_id"))].add(record.value)

    report = Report(achievements=len(rows), exit_records=sum(len(v) for v in commands.values()))
    problems = report.problems
    by_enrollment: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_enrollment[row["enrollment_id"]].append(row)
    known_ids = {str(r["command_id"]) for r in rows}

    for enrollment_id, its_rows in by_enrollment.items():
        if len(its_rows) > 1:
            problems["enrollments with two achievement rows"].append(enrollment_id)
    for row in rows:
        command_id = str(row["command_id"])
        if command_id not in commands:
            problems["achievements without an exit command on the topic"].append(command_id)
        if row["published_at"] is None:
            problems["achievements not marked published"].append(command_id)
        expected_id = str(storage.command_id_for(row["account_id"], row["enrollment_id"]))
        if command_id != expected_id:
            problems["command ids not derived from their enrollment"].append(command_id)
    for command_id, copies in commands.items():
        if command_id not in known_ids:
            problems["exit commands without an achievement"].append(command_id)
        if len(copies) > 1:
            problems["command ids whose copies differ"].append(command_id)

    if expected_enrollments is not None:
        achieved = set(by_enrollment)
        problems["lost achievements (expected, not recorded)"].extend(
            sorted(expected_enrollments - achieved)
        )
        problems["extra achievements (recorded, not expected)"].extend(
            sorted(achieved - expected_enrollments)
        )
    return report


async def _achievements(settings: Settings, account_prefix: str | None) -> list[dict[str, Any]]:
    a = storage.achievements
    query = sa.select(a.c.enrollment_id, a.c.account_id, a.c.command_id, a.c.published_at)
    if account_prefix is not None:
        query = query.where(a.c.account_id.startswith(account_prefix, autoescape=True))
    engine = storage.make_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            return [dict(r) for r in (await conn.execute(query)).mappings()]
    finally:
        await engine.dispose()

"""The worker's cache of active goals: loaded at start, pushed by PostgreSQL on every change.

Changes arrive through LISTEN on the channel the ``goals`` table notifies (migration 0002);
each notification triggers a reload, several close together trigger one. Whenever the
listening connection is (re)established the cache reloads in full, so a change made while the
worker was not listening is never missed. A slow fingerprint poll backs this up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from sqlalchemy.ext.asyncio import AsyncEngine

from goalworker import storage
from goalworker.matching import GoalIndex

log = logging.getLogger(__name__)

T = TypeVar("T")
Retrying = Callable[[str, Callable[[], Awaitable[T]]], Awaitable[T]]

#: Seconds between attempts to re-establish the listening connection.
RELISTEN_SECONDS = 1.0


class GoalCache:
    """Holds the current :class:`GoalIndex` and keeps it fresh."""

    def __init__(self, engine: AsyncEngine, database_url: str) -> None:
        self.engine = engine
        self.index = GoalIndex()
        #: monotonic time of the last reload, for latency measurements and logs.
        self.loaded_at = 0.0
        self._database_url = database_url
        self._fingerprint: tuple[Any, ...] | None = None
        self._dirty = asyncio.Event()
        self._reload_lock = asyncio.Lock()

    async def reload(self, retrying: Retrying[Any], *, force: bool = True, why: str = "") -> None:
        """Load every active goal when forced or when the table's fingerprint changed."""
        async with self._reload_lock:
            fingerprint = await retrying(
                "read goal fingerprint", lambda: storage.goals_fingerprint(self.engine)
            )
            if not force and fingerprint == self._fingerprint:
                return
            started = time.monotonic()
            goals = await retrying("load goals", lambda: storage.load_active_goals(self.engine))
            self.index = GoalIndex(goals)
            self._fingerprint = fingerprint
            self.loaded_at = time.monotonic()
            log.info(
                "goal cache loaded: %d active goals in %.0f ms (%s); matching uses them now",
                len(goals),
                (self.loaded_at - started) * 1000,
                why or "start",
            )

    async def listen(self, retrying: Retrying[Any]) -> None:
        """Reload on every change notification until cancelled; reconnect when dropped."""
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    storage.libpq_url(self._database_url), autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {storage.GOALS_CHANNEL}")
                    log.info("listening for goal changes on channel %s", storage.GOALS_CHANNEL)
                    # Changes made while nobody listened are picked up by this full reload.
                    await self.reload(retrying, why="listening again")
                    async for _ in conn.notifies():
                        await self.reload(retrying, why="goals changed")
            except (psycopg.Error, OSError) as exc:
                log.warning(
                    "goal change listener lost its connection: %s; will reconnect in %.0fs",
                    exc,
                    RELISTEN_SECONDS,
                )
                await asyncio.sleep(RELISTEN_SECONDS)

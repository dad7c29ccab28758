"""``/healthz``: is the database reachable and is a worker running (a fresh heartbeat)?

A bot whose worker died still accepts commands but never answers them; an orchestrator should
see that as unhealthy. "Fresh" is a few heartbeat intervals, never less than 30 seconds, and,
when the service spawns its own worker, newer than the service itself: right after a restart
the previous worker's heartbeat is not a live worker (``bot/generator.py`` decides). Where
workers come and go on their own (KEDA scaling to zero), ``/healthz?worker=optional`` asks about
the bot and its database only.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gouache.bot.generator import GeneratorWatch
from gouache.config import Settings
from gouache.storage.base import Storage

__all__ = ["Health"]


class Health:
    def __init__(
        self, storage: Storage, settings: Settings, *, watch: GeneratorWatch | None = None
    ) -> None:
        self._storage = storage
        self._watch = watch or GeneratorWatch(settings)
        self._timeout = 5.0

    async def check(self, worker_required: bool = True) -> tuple[bool, dict[str, Any]]:
        """(healthy, details for the response body); the worker part only counts when required."""
        try:
            stats = await asyncio.wait_for(self._storage.stats(), self._timeout)
        except Exception as exc:  # any failure here means the database is not usable
            return False, {"status": "unhealthy", "database": f"unreachable: {type(exc).__name__}"}
        details: dict[str, Any] = {
            "database": "ok",
            "queued_jobs": stats.queued_jobs,
            "running_jobs": stats.running_jobs,
        }
        state = self._watch.judge(stats)
        if state.heartbeat_age is not None:
            details["worker_heartbeat_age_seconds"] = round(state.heartbeat_age, 1)
        if not state.live:
            details.update(status="ok" if not worker_required else "unhealthy", worker=state.reason)
            return not worker_required, details
        details.update(status="ok", worker="ok")
        return True, details

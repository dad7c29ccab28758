"""``/healthz``: is the database reachable and has a worker heartbeated recently?

A bot whose worker died still accepts commands but never answers them; an orchestrator should
see that as unhealthy. "Recently" is a few heartbeat intervals, never less than 30 seconds.
Where workers come and go on their own (KEDA scaling to zero), ``/healthz?worker=optional``
asks about the bot and its database only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from gouache.config import Settings
from gouache.storage.base import Storage

__all__ = ["Health"]


class Health:
    def __init__(
        self, storage: Storage, settings: Settings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._storage = storage
        self._max_age = max(30.0, 3 * settings.worker.heartbeat_seconds, settings.worker.poll_seconds * 3)
        self._clock = clock
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
        seen = stats.last_worker_seen
        if seen is None:
            details.update(status="ok" if not worker_required else "unhealthy",
                           worker="no worker has heartbeated yet")  # fmt: skip
            return not worker_required, details
        age = self._clock() - _timestamp(seen)
        details["worker_heartbeat_age_seconds"] = round(age, 1)
        if age > self._max_age:
            details.update(status="ok" if not worker_required else "unhealthy",
                           worker=f"no heartbeat for {age:.0f} s")  # fmt: skip
            return not worker_required, details
        details.update(status="ok", worker="ok")
        return True, details


def _timestamp(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()

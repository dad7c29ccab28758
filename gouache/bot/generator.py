"""Is an image generator (a worker) running? Read from the heartbeats in the database.

Admission still queues while none is (a worker that comes back serves the backlog), but the
reply says so instead of promising an ETA, and ``/healthz`` reports why. A heartbeat written
before this service started belongs to a previous run when the service spawns its own worker:
right after a restart it must not pass for a live one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from gouache import messages
from gouache.config import Settings
from gouache.storage.base import QueueStats

__all__ = ["GeneratorState", "GeneratorWatch", "STARTUP_GRACE_SECONDS"]

# A first worker start loads torch and the models: up to a couple of minutes on a busy CPU.
STARTUP_GRACE_SECONDS = 180.0


@dataclass(frozen=True)
class GeneratorState:
    live: bool
    reason: str  # "ok", or why no worker counts as running (a user-facing sentence)
    heartbeat_age: float | None  # seconds since the newest heartbeat, None when there is none
    starting: bool = False  # our own worker is still in its first start (loading models)


class GeneratorWatch:
    """Judges ``QueueStats`` heartbeats: fresh, stale, or from before this service started.

    ``since``: when this process started its own worker (all-in-one ``gouache run``); None in
    scale-out mode, where workers outlive the service and any fresh heartbeat counts.
    ``restarts``: how often the spawned worker has exited, to say why there is no heartbeat.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        since: float | None = None,
        restarts: Callable[[], int] = lambda: 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        worker = settings.worker
        self.max_age = max(30.0, 3 * worker.heartbeat_seconds, 3 * worker.poll_seconds)
        self._since = since
        self._on_demand = worker.on_demand
        self._restarts = restarts
        self._clock = clock

    def judge(self, stats: QueueStats) -> GeneratorState:
        seen = stats.last_worker_seen
        restarts = self._restarts()
        seen_since_start = seen is not None and (self._since is None or _timestamp(seen) >= self._since)
        if (not seen_since_start and self._since is not None and restarts == 0
                and self._clock() - self._since < STARTUP_GRACE_SECONDS):
            if seen is None:
                return GeneratorState(False, messages.worker_starting(), None, starting=True)
            age = max(0.0, self._clock() - _timestamp(seen))
            reason = f"{messages.worker_starting()} {messages.no_worker_since_start(age)}"
            return GeneratorState(False, reason, age, starting=True)
        if seen is None:
            if self._on_demand:  # the queue starts a worker (KEDA): the job is its reason
                return GeneratorState(False, messages.worker_scaling_up(), None, starting=True)
            return GeneratorState(False, self._why(messages.no_worker_yet(), restarts), None)
        seen_at = _timestamp(seen)
        age = max(0.0, self._clock() - seen_at)
        if self._since is not None and seen_at < self._since:
            return GeneratorState(False, self._why(messages.no_worker_since_start(age), restarts), age)
        if age > self.max_age and self._on_demand:
            return GeneratorState(False, messages.worker_scaling_up(), age, starting=True)
        if age > self.max_age:
            return GeneratorState(False, self._why(messages.no_heartbeat_for(age), restarts), age)
        return GeneratorState(True, "ok", age)

    @staticmethod
    def _why(reason: str, restarts: int) -> str:
        return f"{reason} {messages.worker_restarts(restarts)}" if restarts else reason


def _timestamp(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()

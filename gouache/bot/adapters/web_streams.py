"""Server-sent event streams for the web adapter: capped, and one poller per job.

However many tabs watch one job, one task reads it from storage and fans each new view out to
every stream; streams per user and in total are capped, so 500 streams on one job cost one
poll per interval, not 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from gouache import messages
from gouache.errors import RateLimited, UserError
from gouache.storage.base import StorageError

__all__ = ["StreamHub", "Watch"]

log = logging.getLogger(__name__)

LoadView = Callable[[str], Awaitable[tuple[dict[str, Any], bool]]]  # job id -> (view, terminal)


class Watch:
    """One job's latest view, shared by its streams; ``version`` grows with each change."""

    def __init__(self) -> None:
        self.view: dict[str, Any] | None = None
        self.terminal = False
        self.failed = False  # storage went away: streams end, the page falls back to polling
        self.version = 0
        self.streams = 0
        self.task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    def publish(self, view: dict[str, Any], terminal: bool) -> None:
        if view != self.view or terminal != self.terminal:
            self.view, self.terminal = view, terminal
            self.version += 1
            self._wake()

    def fail(self) -> None:
        self.failed = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self, timeout: float) -> bool:
        """Wait for the next change; False after ``timeout`` without one."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            return False
        return True


class StreamHub:
    """Opens capped streams; runs one poller per watched job while any stream is open."""

    def __init__(
        self, load_view: LoadView, *, max_total: int, max_per_user: int, poll_seconds: float = 0.4
    ) -> None:
        self._load = load_view
        self._max_total, self._max_per_user = max_total, max_per_user
        self._poll = poll_seconds
        self._watches: dict[str, Watch] = {}
        self._per_user: Counter[str] = Counter()
        self._total = 0
        self._nudge = asyncio.Event()

    @property
    def open_streams(self) -> int:
        return self._total

    @property
    def pollers(self) -> int:
        return sum(1 for w in self._watches.values() if w.task is not None and not w.task.done())

    def nudge(self) -> None:
        """Something finished: every poller looks again now instead of at its next tick."""
        self._nudge.set()
        self._nudge = asyncio.Event()

    @contextlib.asynccontextmanager
    async def open(self, user: str, job_id: str) -> AsyncIterator[Watch]:
        if self._total >= self._max_total or self._per_user[user] >= self._max_per_user:
            raise RateLimited(messages.web_too_many_streams(), 5.0)
        self._total += 1
        self._per_user[user] += 1
        watch = self._watches.get(job_id)
        if watch is None:
            watch = self._watches[job_id] = Watch()
            watch.task = asyncio.create_task(self._poller(job_id, watch), name=f"sse:{job_id}")
        watch.streams += 1
        try:
            yield watch
        finally:
            self._total -= 1
            self._per_user[user] -= 1
            if not self._per_user[user]:
                del self._per_user[user]
            watch.streams -= 1
            if not watch.streams:
                self._watches.pop(job_id, None)
                if watch.task is not None:
                    watch.task.cancel()

    async def _poller(self, job_id: str, watch: Watch) -> None:
        try:
            while True:
                view, terminal = await self._load(job_id)
                watch.publish(view, terminal)
                if terminal:
                    return
                nudge = self._nudge
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(nudge.wait(), self._poll)
        except (StorageError, UserError) as exc:  # an outage, or the job is gone
            log.warning("event stream for job %s stopped: %s", job_id, type(exc).__name__)
            watch.fail()

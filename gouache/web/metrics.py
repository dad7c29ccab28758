"""Prometheus figures derived from the jobs table, so one ``/metrics`` covers every worker.

The worker is another process (often another machine), so instead of sharing in-memory
counters this collector reads what the queue already records: ``created_at``, ``started_at``
and ``finished_at`` per job, and the fact that one claim stamps every job of a batch with the
same ``(worker_id, started_at)``. That gives queue wait per job, batch size and generation time
per batch, images generated and failures by final state. It counts jobs that started after
this process did; counters restart with the process, as Prometheus expects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import generate_latest

from gouache.observability import Metrics
from gouache.storage.base import Storage
from gouache.storage.jobs import Job, JobStatus

__all__ = ["QueueMetrics"]

log = logging.getLogger(__name__)
_SEEN_STATUSES = (
    JobStatus.RUNNING,
    JobStatus.SUCCEEDED,
    JobStatus.FAILED,
    JobStatus.CANCELLED,
    JobStatus.DEAD,
)


@dataclass
class _Batch:
    jobs: dict[str, Job] = field(default_factory=dict)
    observed_size: bool = False


class QueueMetrics:
    """Polls storage and feeds ``Metrics``; ``render()`` is the ``/metrics`` body."""

    def __init__(
        self,
        storage: Storage,
        metrics: Metrics,
        *,
        window: int = 200,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._storage = storage
        self._metrics = metrics
        self._window = window
        self._clock = clock
        self._since = clock()
        self._waited: set[str] = set()  # jobs whose queue wait was observed
        self._finished: set[str] = set()  # jobs counted as finished
        self._batches: dict[tuple[str, float], _Batch] = {}
        self._closed: set[tuple[str, float]] = set()  # batches fully observed
        self._lock = asyncio.Lock()

    async def run(self, interval: float = 2.0) -> None:
        """Refresh in the background so short batches are seen between scrapes."""
        while True:
            with contextlib.suppress(Exception):
                await self.refresh()
            await asyncio.sleep(interval)

    async def render(self) -> bytes:
        try:
            await self.refresh()
        except Exception:  # still export what we have; /healthz reports the outage
            log.warning("metrics refresh failed", exc_info=True)
        return generate_latest(self._metrics.registry)

    async def refresh(self) -> None:
        async with self._lock:
            stats = await self._storage.stats()
            m = self._metrics
            m.queue_depth.set(stats.queued_jobs)
            m.jobs_running.set(stats.running_jobs)
            if stats.last_worker_seen is not None:
                m.worker_heartbeat_age.set(max(0.0, self._clock() - stats.last_worker_seen.timestamp()))
            jobs: list[Job] = []
            for status in _SEEN_STATUSES:
                jobs += await self._storage.list_jobs(status=status, limit=self._window)
            self.observe(jobs)

    def observe(self, jobs: Iterable[Job]) -> None:
        """Record every job not seen before; pure bookkeeping, no I/O (tested directly)."""
        m = self._metrics
        visible: set[str] = set()
        keys: set[tuple[str, float]] = set()
        for job in jobs:
            visible.add(job.id)
            if job.started_at is None or job.started_at.timestamp() < self._since:
                continue
            key = (job.worker_id or "", job.started_at.timestamp())
            keys.add(key)
            if job.id not in self._waited:
                self._waited.add(job.id)
                m.queue_wait.observe(_seconds(job.created_at, job.started_at))
            if key not in self._closed:
                self._batches.setdefault(key, _Batch()).jobs[job.id] = job
            if job.is_terminal and job.id not in self._finished:
                self._finished.add(job.id)
                m.jobs_finished.labels(status=job.status.value).inc()
                if job.status is JobStatus.SUCCEEDED:
                    m.images.inc(job.images)
                elif job.status in (JobStatus.FAILED, JobStatus.DEAD):
                    m.failures.labels(reason=job.status.value).inc()
        self._close_batches()
        self._waited &= visible
        self._finished &= visible
        self._closed &= keys

    def _close_batches(self) -> None:
        """A batch's size is known at claim; its generation time once every job has ended."""
        m = self._metrics
        for key, batch in list(self._batches.items()):
            if not batch.observed_size:
                batch.observed_size = True
                m.batch_size.observe(sum(j.images for j in batch.jobs.values()))
            if all(j.is_terminal for j in batch.jobs.values()):
                ends = [j.finished_at for j in batch.jobs.values() if j.finished_at is not None]
                if ends:
                    m.generation_time.observe(max(0.0, max(ends).timestamp() - key[1]))
                del self._batches[key]
                self._closed.add(key)


def _seconds(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds())

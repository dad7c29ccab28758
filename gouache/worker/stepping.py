"""Step-level batching in the worker: feed a running batch between steps, store as lanes retire.

The worker claims the fairest job's shape (model + latent size), opens a ``RunningBatch`` and
then, between every two UNet steps (each run in a thread, so the event loop keeps
heartbeating), it stores the jobs whose lanes retired and claims newcomers of the same shape up
to the free row budget (CFG rows count twice, so it claims ``free_rows // 2`` images). A job
that has already crashed a worker (``attempts > 0``) runs in a batch of its own and nothing
joins it, so a poison request cannot take other users' jobs down with it. SIGTERM stops the
joining; the lanes already running finish and are stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gouache.config import Settings
from gouache.errors import UserError
from gouache.generation.loop.batch import BatchItem, ItemResult, LaneSpec, ShapeKey
from gouache.request import Request
from gouache.storage.base import Storage, StorageError
from gouache.storage.jobs import ArtifactKind, Job
from gouache.worker.jobs import EstimatorLookup, item_for

__all__ = ["RunningBatchLike", "SteppedRun", "lane_spec", "shape_of", "stop_task"]

log = logging.getLogger("gouache.worker")


class RunningBatchLike(Protocol):
    """What the worker needs of ``generation.running.RunningBatch`` (tests use fakes)."""

    @property
    def free_rows(self) -> int: ...

    def __len__(self) -> int: ...

    def admit(self, item: BatchItem, spec: LaneSpec, user: str | None = None) -> None: ...

    def cancel(self, item_id: str) -> None: ...

    def step(self) -> list[ItemResult]: ...

    def progress(self) -> dict[str, tuple[int, int]]: ...


async def stop_task(task: asyncio.Task[None]) -> None:
    """Cancel a background task (a lease keeper, the sweeper) and wait until it has stopped."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def shape_of(request: Request) -> ShapeKey:
    return ShapeKey(request.model, request.width, request.height)


def lane_spec(request: Request) -> LaneSpec:
    """The per-lane settings of a request (everything the shape key leaves out)."""
    return LaneSpec(request.steps, request.sampler, request.guidance, request.pipeline,
                    request.diversify)  # fmt: skip


@dataclass
class SteppedRun:
    """One running batch from its first claim until its last lane retires."""

    storage: Storage
    settings: Settings
    worker_id: str
    batch: RunningBatchLike
    finish: Callable[..., Awaitable[None]]  # (job, result, control image): store, complete
    stop: asyncio.Event
    estimators: EstimatorLookup | None = None  # /depth photos: the model's depth estimator
    jobs: dict[str, Job] = field(default_factory=dict)
    controls: dict[str, Any] = field(default_factory=dict)  # /depth: the depth map each job used
    progress: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    admitted: int = 0

    async def run(self, first: Sequence[Job]) -> None:
        """Admit ``first``, then step until the batch is empty; newcomers join between steps."""
        alone = any(job.attempts > 1 for job in first)  # a retried job runs by itself
        await self._admit(first)
        keeper = asyncio.create_task(self._keep_alive())
        try:
            while len(self.batch):
                retired = await asyncio.to_thread(self.batch.step)
                self.steps += 1
                self._note_progress()
                for result in retired:
                    job = self.jobs.pop(result.item_id)
                    self.progress.pop(job.id, None)
                    await self.finish(job, result, control=self.controls.pop(job.id, None))
                if not alone and not self.stop.is_set():
                    await self._join(shape_of(first[0].request))
        finally:
            await stop_task(keeper)

    async def fail_all(self, message: Callable[[str], str]) -> None:
        """A bug in the batch: every job still in it fails with a message naming it."""
        for job in list(self.jobs.values()):
            with contextlib.suppress(Exception):
                await self.storage.fail(job.id, self.worker_id, message(job.id))
        self.jobs.clear()

    async def _join(self, shape: ShapeKey) -> None:
        room = self.batch.free_rows // 2
        if room < 1:
            return
        key = f"{shape.model}|{shape.width}x{shape.height}"
        try:
            joiners = await self.storage.claim_joiners(
                self.worker_id, key, room, self.settings.worker.lease_seconds
            )
        except StorageError as exc:  # the database is away: the running lanes go on
            log.warning("could not claim newcomers: %s", exc)
            return
        await self._admit(joiners)

    async def _admit(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            try:
                inputs = await self.storage.artifacts(job.id) if job.request.attachment else []
                inputs = [a for a in inputs if a.kind is ArtifactKind.INPUT]
                s = self.settings
                item = await asyncio.to_thread(  # decoding and depth estimation
                    item_for, job.id, job.request, inputs, s.limits, s.gif, self.estimators
                )
                self.batch.admit(item, lane_spec(job.request), user=job.user)
                if item.control_image is not None:
                    self.controls[job.id] = item.control_image
            except UserError as exc:
                await self.storage.fail(job.id, self.worker_id, exc.message)
                continue
            self.jobs[job.id] = job
            self.progress[job.id] = 0.0
            self.admitted += 1

    def _note_progress(self) -> None:
        for item_id, (done, total) in self.batch.progress().items():
            if item_id in self.progress:
                self.progress[item_id] = done / max(total, 1)

    async def _keep_alive(self) -> None:
        """Heartbeat leases, pick up cancellations, write progress at most once per interval."""
        cfg = self.settings.worker
        tick = max(0.05, min(cfg.heartbeat_seconds, cfg.progress_interval_seconds or cfg.heartbeat_seconds))
        last_beat = last_progress = 0.0
        written: dict[str, float] = {}
        while True:
            now = time.monotonic()
            ids = list(self.jobs)
            if now - last_beat >= cfg.heartbeat_seconds and ids:
                try:
                    for job_id in await self.storage.heartbeat(self.worker_id, ids, cfg.lease_seconds):
                        self.batch.cancel(job_id)  # cancelled, or no longer ours: drop it
                except StorageError as exc:
                    log.warning("heartbeat failed, retrying: %s", exc)
                last_beat = now
            if now - last_progress >= cfg.progress_interval_seconds:
                for job_id, value in list(self.progress.items()):
                    if written.get(job_id) != value:
                        with contextlib.suppress(StorageError):
                            await self.storage.set_progress(job_id, value)
                        written[job_id] = value
                last_progress = now
            await asyncio.sleep(tick)

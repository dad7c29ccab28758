"""One running batch in the worker, from its first claim until its last job is stored.

Every claim goes through here, in either batching mode: the claimed jobs' images become lanes
of a running batch that steps in a thread (so the event loop keeps heartbeating), the jobs
whose lanes retired are stored between steps, and in step mode newcomers of the same shape
(model + latent size) are claimed and admitted between steps, up to the free row budget (CFG
rows count twice, so it claims ``free_rows // 2`` images). Request mode is only a claim policy:
one batch key's jobs, no joiners. A job that has already crashed a worker (``attempts > 1``)
runs in a batch of its own that nothing joins, so a poison request cannot take other users'
jobs down with it. SIGTERM stops the joining; the lanes already running finish and are stored.

An interpolation is one job of many lanes in the shared batch (a lane per frame, each with its
own noise and text embeddings); it is stored when its last frame retires. Jobs that are many
lanes of batches of their own shapes (sweeps, tiled upscales) and ``/diversity --enlarge`` (a
baseline and an enlarged set) are claimed alone and run whole by ``run_whole`` under the same
keep-alive: one heartbeat, one progress writer, one place that picks up cancellations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gouache.config import Settings
from gouache.errors import UserError
from gouache.generation.loop.batch import ItemResult
from gouache.storage.base import Storage, StorageError
from gouache.storage.jobs import Artifact, ArtifactKind, Job
from gouache.worker.engine_like import RunningBatchLike
from gouache.worker.experiments import admit_interpolation, interpolation_artifacts
from gouache.worker.jobs import EstimatorLookup, item_for, lane_spec

__all__ = ["BatchRun", "Finish", "RunWhole", "stop_task"]

log = logging.getLogger("gouache.worker")

# (job, result, made artifacts or None, enlarged sets or None, control image or None): store it.
Finish = Callable[[Job, ItemResult, Any, Any, Any], Awaitable[None]]
# (job, its uploads, on_step, should_stop) -> (result, made artifacts, enlarged sets).
RunWhole = Callable[[Job, list[Artifact], Callable[[int, int], None], Callable[[str], bool]],
                    tuple[ItemResult, Any, Any]]  # fmt: skip


async def stop_task(task: asyncio.Task[None]) -> None:
    """Cancel a background task (a lease keeper, the sweeper) and wait until it has stopped."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@dataclass
class BatchRun:
    """The jobs of one running batch (or one job run whole) and their leases."""

    storage: Storage
    settings: Settings
    worker_id: str
    batch: RunningBatchLike | None  # None for a job run whole
    finish: Finish
    stop: asyncio.Event
    estimators: EstimatorLookup | None = None  # /depth photos: the model's depth estimator
    join: bool = True  # step mode: newcomers of the shape join between steps
    jobs: dict[str, Job] = field(default_factory=dict)
    controls: dict[str, Any] = field(default_factory=dict)  # /depth: the depth map each job used
    frames: dict[str, list[str]] = field(default_factory=dict)  # /interpolate: job -> its lanes' items
    retired_frames: dict[str, dict[str, ItemResult]] = field(default_factory=dict)
    progress: dict[str, float] = field(default_factory=dict)
    cancelled: set[str] = field(default_factory=set)  # jobs run whole: asked to stop
    lock: threading.Lock = field(default_factory=threading.Lock)
    steps: int = 0
    admitted: int = 0

    async def run(self, first: Sequence[Job], run_whole: RunWhole | None = None) -> None:
        """Admit ``first`` and step until the batch is empty, or run the one job whole."""
        keeper = asyncio.create_task(self._keep_alive())
        try:
            if self.batch is None:
                assert run_whole is not None and len(first) == 1
                await self._whole(first[0], run_whole)
            else:
                await self._lanes(first, self.batch)
        finally:
            await stop_task(keeper)

    async def fail_all(self, message: Callable[[str], str]) -> None:
        """A bug in the batch: every job still in it fails with a message naming it."""
        for job in list(self.jobs.values()):
            with contextlib.suppress(Exception):
                await self.storage.fail(job.id, self.worker_id, message(job.id))
        self.jobs.clear()

    async def _lanes(self, first: Sequence[Job], batch: RunningBatchLike) -> None:
        alone = not self.join or any(job.attempts > 1 for job in first)  # retried: by itself
        await self._admit(first, batch)
        while len(batch):
            retired = await asyncio.to_thread(batch.step)
            self.steps += 1
            self._progress(batch.progress())
            for part in retired:
                whole = await self._whole_job_result(part, batch)
                if whole is None:  # an interpolation frame whose siblings are still running
                    continue
                result, made = whole
                job = self.jobs.pop(result.item_id)
                self.progress.pop(job.id, None)
                await self.finish(job, result, made, None, self.controls.pop(job.id, None))
            if not alone and not self.stop.is_set():
                await self._join(first[0], batch)

    def _progress(self, items: dict[str, tuple[int, int]]) -> None:
        """Each job's progress: its item's, or the sum over an interpolation's frames."""
        for item_id, (done, total) in items.items():
            if item_id in self.progress:
                self.progress[item_id] = done / max(total, 1)
        for job_id, parts in self.frames.items():
            steps = self.jobs[job_id].request.steps
            done = sum(items[p][0] if p in items else steps for p in parts)
            self.progress[job_id] = done / max(steps * len(parts), 1)

    async def _whole_job_result(self, part: ItemResult, batch: RunningBatchLike,
                                ) -> tuple[ItemResult, list[Artifact] | None] | None:  # fmt: skip
        """A retired item as its job's result, or None while an interpolation's other frames
        run. A frame that fails or is cancelled stops its siblings; the job ends as it did."""
        job_id = next((j for j, parts in self.frames.items() if part.item_id in parts), None)
        if job_id is None:
            return part, None
        parts = self.frames[job_id]
        retired = self.retired_frames.setdefault(job_id, {})
        retired[part.item_id] = part
        if not part.ok:
            for item_id in parts:
                if item_id not in retired:
                    batch.cancel(item_id)
        if len(retired) < len(parts):
            return None
        del self.frames[job_id], self.retired_frames[job_id]
        results = [retired[item_id] for item_id in parts]
        failed = next((r for r in results if r.error is not None), None)
        if failed is not None or any(r.cancelled for r in results):
            return ItemResult(job_id, error=failed.error if failed else None, cancelled=failed is None), None
        frames = [r.images[0] for r in results]
        request = self.jobs[job_id].request
        made = await asyncio.to_thread(interpolation_artifacts, job_id, request, frames, self.settings.gif)
        return ItemResult(job_id, images=frames), made

    async def _whole(self, job: Job, run_whole: RunWhole) -> None:
        self.jobs[job.id] = job
        self.progress[job.id] = 0.0
        self.admitted += 1

        def on_step(done: int, total: int) -> None:
            self.progress[job.id] = done / max(total, 1)

        def should_stop(_item_id: str) -> bool:
            with self.lock:
                return job.id in self.cancelled

        try:
            inputs = await self._inputs(job)
            result, made, enlarged = await asyncio.to_thread(run_whole, job, inputs, on_step,
                                                             should_stop)  # fmt: skip
        except UserError as exc:
            result, made, enlarged = ItemResult(job.id, error=exc), None, None
        self.jobs.pop(job.id, None)
        self.progress.pop(job.id, None)
        await self.finish(job, result, made, enlarged, None)

    async def _join(self, first: Job, batch: RunningBatchLike) -> None:
        room = batch.free_rows // 2
        if room < 1:
            return
        try:
            joiners = await self.storage.claim_joiners(
                self.worker_id, first.request.shape_key, room, self.settings.worker.lease_seconds
            )
        except StorageError as exc:  # the database is away: the running lanes go on
            log.warning("could not claim newcomers: %s", exc)
            return
        await self._admit(joiners, batch)

    async def _admit(self, jobs: Sequence[Job], batch: RunningBatchLike) -> None:
        for job in jobs:
            try:
                if job.request.frames:  # /interpolate: a lane per frame, each its own noise and text
                    self.frames[job.id] = await asyncio.to_thread(
                        admit_interpolation, batch, job.id, job.request, job.user)  # fmt: skip
                else:
                    await self._admit_one(job, batch)
            except UserError as exc:
                await self.storage.fail(job.id, self.worker_id, exc.message)
                continue
            self.jobs[job.id] = job
            self.progress[job.id] = 0.0
            self.admitted += 1

    async def _admit_one(self, job: Job, batch: RunningBatchLike) -> None:
        inputs = await self._inputs(job)
        s = self.settings
        item = await asyncio.to_thread(  # decoding and depth estimation
            item_for, job.id, job.request, inputs, s.limits, s.gif, self.estimators
        )
        batch.admit(item, lane_spec(job.request), user=job.user)
        if item.control_image is not None:
            self.controls[job.id] = item.control_image

    async def _inputs(self, job: Job) -> list[Artifact]:
        """The job's uploads (a /depth map or photo), read from storage."""
        if not job.request.attachment:
            return []
        return [a for a in await self.storage.artifacts(job.id) if a.kind is ArtifactKind.INPUT]

    def _cancel(self, job_id: str) -> None:
        if self.batch is not None:
            for item_id in self.frames.get(job_id, [job_id]):
                self.batch.cancel(item_id)
        with self.lock:
            self.cancelled.add(job_id)

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
                        self._cancel(job_id)  # cancelled, or no longer ours: drop it
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

"""The worker loop: claim a batch -> one engine call -> store artifacts -> complete.

The GPU work runs in a thread so this process's event loop keeps heartbeating leases while a
batch generates. A crash (SIGKILL, OOM-killer, sticky CUDA error) loses nothing: the leases
expire and the sweeper re-queues the jobs, up to ``max_attempts`` times. A sticky CUDA error
makes the worker exit with ``EXIT_DEVICE_LOST`` so its supervisor starts a fresh process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from gouache import messages
from gouache.config import Settings
from gouache.errors import UserError
from gouache.generation.batch import BatchItem, BatchKey, ItemResult, ShapeKey
from gouache.generation.diversity import DiversityScorer
from gouache.generation.estimators import EstimatorRegistry
from gouache.generation.safety import SafetyClassifier
from gouache.request import Request
from gouache.storage.base import LeaseLost, Storage, StorageError
from gouache.storage.jobs import Artifact, ArtifactKind, Job, verdict_artifact
from gouache.worker.experiments import (
    experiment_job,
    is_experiment,
    loaded_model,
    process_artifacts,
)
from gouache.worker.jobs import Made, artifacts_for, batch_key_for, item_for
from gouache.worker.loading import build_estimators
from gouache.worker.stepping import RunningBatchLike, SteppedRun, shape_of, stop_task

if TYPE_CHECKING:
    from PIL.Image import Image

    from gouache.generation.enlarge import Enlarged

__all__ = ["Worker", "EngineLike", "DeviceLost", "EXIT_DEVICE_LOST"]

log = logging.getLogger(__name__)
EXIT_DEVICE_LOST = 3


class EngineLike(Protocol):
    def warm_up(self, model: str) -> None: ...

    def generate(
        self,
        key: BatchKey,
        items: Sequence[BatchItem],
        on_step: Callable[[int, int], None] | None = None,
        should_stop: Callable[[str], bool] | None = None,
    ) -> list[ItemResult]: ...

    def running_batch(self, shape: ShapeKey, *, row_budget: int, decode_chunk: int) -> RunningBatchLike: ...


class DeviceLost(Exception):
    """The engine hit a sticky device error: this process must exit and be restarted."""


@dataclass
class _Running:
    """Shared between the event loop and the engine thread for one batch."""

    job_ids: list[str]
    cancelled: set[str] = field(default_factory=set)
    step: int = 0
    steps: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_step(self, step: int, steps: int) -> None:
        with self.lock:
            self.step, self.steps = step, max(steps, 1)

    def should_stop(self, item_id: str) -> bool:
        with self.lock:
            return item_id in self.cancelled


class Worker:
    """Loops claim -> generate -> complete until ``stop`` is set."""

    def __init__(
        self,
        storage: Storage,
        engine: EngineLike,
        settings: Settings,
        worker_id: str,
        scorer: DiversityScorer | None = None,
        safety: SafetyClassifier | None = None,
        estimators: EstimatorRegistry | None = None,
    ) -> None:
        self.storage = storage
        self.engine = engine
        self.scorer = scorer or DiversityScorer()
        self.safety = safety
        self.settings = settings
        self.worker_id = worker_id
        self.batches = 0
        # /depth photos: the models' depth estimators, loaded here beside the GPU on first use.
        self.estimators = estimators or build_estimators(settings)

    async def run(self, stop: asyncio.Event) -> None:
        cfg, batching = self.settings.worker, self.settings.batching
        stepped = batching.mode == "step"
        sweeper = asyncio.create_task(self._sweep(stop))
        try:
            while not stop.is_set():
                try:
                    await self.storage.worker_seen(self.worker_id)
                    jobs = await self.storage.claim_batch(
                        self.worker_id,
                        batching.max_rows // 2 if stepped else batching.max_batch_images,
                        cfg.lease_seconds,
                        batching.batch_window_ms / 1000,
                        by="shape_key" if stepped else "batch_key", models=cfg.models,
                    )
                    if jobs:
                        # Experiments (sweeps, interpolations, --process) have shape keys of
                        # their own and run through the request-level path.
                        through_steps = stepped and not jobs[0].request.is_experiment
                        await (self.step_through(jobs, stop) if through_steps else self.process(jobs))
                        continue
                except StorageError as exc:
                    # The database is away (restart, failover): leases protect the jobs, so
                    # wait and carry on rather than die.
                    log.warning("storage unavailable, retrying: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), cfg.poll_seconds)
        finally:
            await stop_task(sweeper)

    async def _sweep(self, stop: asyncio.Event) -> None:
        interval = max(0.2, min(self.settings.worker.lease_seconds / 4, 5.0))
        while not stop.is_set():
            try:
                for job in await self.storage.requeue_expired(self.settings.worker.max_attempts):
                    log.warning("lease expired for job %s: now %s", job.id, job.status.value)
            except Exception:
                log.exception("sweeper failed; retrying")
            await asyncio.sleep(interval)

    async def step_through(self, jobs: Sequence[Job], stop: asyncio.Event) -> None:
        """Step-level mode: a running batch opened for ``jobs`` that newcomers join."""
        batching = self.settings.batching
        try:
            batch = await asyncio.to_thread(
                self.engine.running_batch, shape_of(jobs[0].request),
                row_budget=batching.max_rows, decode_chunk=batching.decode_chunk,
            )  # fmt: skip
        except UserError as exc:  # e.g. an unknown model: every job of the claim fails alike
            for job in jobs:
                await self.storage.fail(job.id, self.worker_id, exc.message)
            return
        run = SteppedRun(self.storage, self.settings, self.worker_id, batch, self._finish, stop,
                         self.estimators.get)  # fmt: skip
        started = time.monotonic()
        try:
            await run.run(jobs)
        except Exception as exc:
            if _is_device_lost(exc):
                raise DeviceLost(str(exc)) from exc
            log.exception("running batch failed with jobs %s", sorted(run.jobs))
            await run.fail_all(messages.internal_error)
            return
        self.batches += 1
        log.info("running batch: %d jobs in %d steps, %.2fs", run.admitted, run.steps,
                 time.monotonic() - started)  # fmt: skip

    async def process(self, jobs: Sequence[Job]) -> None:
        """Request mode: one pipeline call for the whole batch; each job ends on its own terms."""
        items: list[BatchItem] = []
        ready: list[Job] = []
        for job in [j for j in jobs if is_experiment(j.request)]:  # sweeps, interpolations
            await self._experiment_job(job)
        for job in [j for j in jobs if not is_experiment(j.request)]:
            try:
                inputs = await self.storage.artifacts(job.id) if job.request.attachment else []
                inputs = [a for a in inputs if a.kind is ArtifactKind.INPUT]
                items.append(await asyncio.to_thread(  # decoding and depth estimation
                    item_for, job.id, job.request, inputs, self.settings.limits,
                    self.settings.gif, self.estimators.get,
                ))  # fmt: skip
                ready.append(job)
            except UserError as exc:
                await self.storage.fail(job.id, self.worker_id, exc.message)
            except Exception:  # a bug reading one job's input must not stall its batch-mates
                log.exception("preparing job %s failed", job.id)
                await self.storage.fail(job.id, self.worker_id, messages.internal_error(job.id))
        if not ready:
            return
        running = _Running([job.id for job in ready])
        keeper = asyncio.create_task(self._keep_alive(running))
        started = time.monotonic()
        enlarged: dict[str, Enlarged] = {}
        try:
            if ready[0].request.enlarge:  # one method per batch: it is part of the batch key
                enlarged = await asyncio.to_thread(self._enlarged, ready[0].request, items, running)
                results = [enlarged[item.item_id].enlarged for item in items]
            else:
                results = await asyncio.to_thread(
                    self.engine.generate,
                    batch_key_for(ready[0].request),
                    items,
                    running.on_step,
                    running.should_stop,
                )
        except Exception as exc:
            if _is_device_lost(exc):
                raise DeviceLost(str(exc)) from exc
            log.exception("engine failed on batch %s", running.job_ids)
            for job in ready:
                await self.storage.fail(job.id, self.worker_id, messages.internal_error(job.id))
            return
        finally:
            await stop_task(keeper)
        self.batches += 1
        log.info(
            "batch of %d jobs (%d images) in %.2fs",
            len(ready), sum(j.images for j in ready), time.monotonic() - started,
        )
        by_id = {r.item_id: r for r in results}
        controls = {item.item_id: item.control_image for item in items}
        # Scoring a /diversity set and storing the artifacts take a while too: keep the leases.
        keeper = asyncio.create_task(self._keep_alive(running))
        try:
            for job in ready:
                await self._finish(job, by_id[job.id], enlarged.get(job.id), controls.get(job.id))
        finally:
            await stop_task(keeper)

    def _enlarged(self, request: Request, items: list[BatchItem], running: _Running) -> dict[str, Enlarged]:
        """/diversity --enlarge: the baseline and the enlarged set, on the same seeds."""
        from gouache.generation.enlarge import generate_enlarged

        def generate(key: BatchKey, batch: Sequence[BatchItem]) -> list[ItemResult]:
            return self.engine.generate(key, batch, running.on_step, running.should_stop)

        encoders = self.scorer.encoders_for(request.model)
        return generate_enlarged(generate, batch_key_for(request), items, request.enlarge,
                                 clip=encoders.clip, known=self.scorer.known_for(request.model))  # fmt: skip

    async def _finish(
        self, job: Job, result: ItemResult, enlarged: Enlarged | None = None,
        control: Image | None = None,
    ) -> None:  # fmt: skip
        try:
            await self._record(job, result, enlarged, control)
        except LeaseLost:
            # Our lease expired and another worker owns the job now: its result wins.
            log.warning("lease lost for job %s; dropping this worker's result", job.id)

    async def _record(
        self, job: Job, result: ItemResult, enlarged: Enlarged | None = None,
        control: Image | None = None,
    ) -> None:  # fmt: skip
        if result.cancelled:
            await self.storage.finish_cancelled(job.id, self.worker_id)
        elif result.error is not None:
            await self.storage.fail(job.id, self.worker_id, result.error.message)
        else:
            artifacts = await asyncio.to_thread(self._artifacts, job, result, None, enlarged, control)
            await self.storage.complete(job.id, self.worker_id, artifacts)

    def _artifacts(
        self, job: Job, result: ItemResult, made: Sequence[Artifact] | None = None,
        enlarged: Enlarged | None = None,
        control: Image | None = None,
    ) -> list[Artifact]:  # fmt: skip
        request, report, picture, how = job.request, None, None, None
        if request.spec.scored and len(result.images) > 1:
            from gouache.generation.diversity_report import scored

            baseline = enlarged.baseline.images if enlarged is not None and enlarged.baseline.ok else None
            report, picture = scored(self.scorer, request.model, request.prompt, result.images,
                                     baseline, request.enlarge)  # fmt: skip
            if enlarged is not None:
                how = Made(enlarged.prompts, enlarged.seeds)
        if made is not None:  # a sweep's grid and cells, an interpolation's GIF and strip
            artifacts = list(made)
        else:
            artifacts = artifacts_for(job.id, request, result, self.settings.gif, report, picture, how,
                                      depth=control)  # fmt: skip
        if request.process:
            model = loaded_model(self.engine, request.model)
            artifacts += process_artifacts(job.id, request, result, model, self.settings.gif)
        if self.safety is not None:
            flagged = {i for i, bad in enumerate(self.safety.flags(result.images)) if bad}
            names = [a.name for a in artifacts if a.index in flagged]
            if flagged:  # a grid, process strip or report composite shows the flagged image too
                names += [a.name for a in artifacts if a.index is None and a.kind is not ArtifactKind.REPORT]
            artifacts.append(verdict_artifact(job.id, names))
        return artifacts

    async def _experiment_job(self, job: Job) -> None:
        """A ``--sweep`` (cells sharing a batch key in one engine call) or an /interpolate job."""
        try:
            inputs = await self.storage.artifacts(job.id) if job.request.attachment else []
            inputs = [a for a in inputs if a.kind is ArtifactKind.INPUT]
        except UserError as exc:
            await self.storage.fail(job.id, self.worker_id, exc.message)
            return
        running = _Running([job.id])
        keeper = asyncio.create_task(self._keep_alive(running))
        try:
            result, made = await asyncio.to_thread(
                experiment_job, self.engine, job.id, job.request, inputs, self.settings.limits,
                self.settings.gif, running.on_step, running.should_stop,
                estimators=self.estimators.get, batching=self.settings.batching,
            )  # fmt: skip
        except UserError as exc:
            await self.storage.fail(job.id, self.worker_id, exc.message)
            return
        except Exception as exc:
            if _is_device_lost(exc):
                raise DeviceLost(str(exc)) from exc
            log.exception("engine failed on experiment %s", job.id)
            await self.storage.fail(job.id, self.worker_id, messages.internal_error(job.id))
            return
        finally:
            await stop_task(keeper)
        self.batches += 1
        try:
            if not result.ok:
                await self._record(job, result)
            else:
                artifacts = await asyncio.to_thread(self._artifacts, job, result, made)
                await self.storage.complete(job.id, self.worker_id, artifacts)
        except LeaseLost:
            log.warning("lease lost for job %s; dropping this worker's result", job.id)

    async def _keep_alive(self, running: _Running) -> None:
        """Heartbeat leases, pick up cancellations, write progress at most once per interval."""
        cfg = self.settings.worker
        tick = max(0.05, min(cfg.heartbeat_seconds, cfg.progress_interval_seconds or cfg.heartbeat_seconds))
        last_beat = last_progress = 0.0
        written = -1.0
        while True:
            now = time.monotonic()
            if now - last_beat >= cfg.heartbeat_seconds:
                cancelled = await self.storage.heartbeat(self.worker_id, running.job_ids, cfg.lease_seconds)
                with running.lock:
                    running.cancelled |= set(cancelled)
                last_beat = now
            with running.lock:
                progress = running.step / running.steps
            if progress != written and now - last_progress >= cfg.progress_interval_seconds:
                for job_id in running.job_ids:
                    await self.storage.set_progress(job_id, progress)
                written, last_progress = progress, now
            await asyncio.sleep(tick)


def _is_device_lost(exc: BaseException) -> bool:
    from gouache.generation.device import FatalDeviceError

    return isinstance(exc, FatalDeviceError)

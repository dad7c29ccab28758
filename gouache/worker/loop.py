"""The worker loop: claim -> one running batch -> store artifacts -> complete.

Each claim (by shape in step mode, by batch key in request mode) becomes a ``BatchRun``: the
jobs' images are lanes of one running batch stepped in a thread, so this process's event loop
keeps heartbeating leases while it generates. A crash (SIGKILL, OOM-killer, sticky CUDA error)
loses nothing: the leases expire and the sweeper re-queues the jobs, up to ``max_attempts``
times. A sticky CUDA error makes the worker exit with ``EXIT_DEVICE_LOST`` so its supervisor
starts a fresh process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from gouache import messages
from gouache.config import Settings
from gouache.errors import UserError
from gouache.generation.diversity.scorer import DiversityScorer
from gouache.generation.estimators import EstimatorRegistry
from gouache.generation.loop.batch import ItemResult
from gouache.generation.safety import SafetyClassifier
from gouache.storage.base import LeaseLost, Storage, StorageError
from gouache.storage.jobs import Artifact, ArtifactKind, Job, verdict_artifact
from gouache.worker.batch_run import BatchRun, stop_task
from gouache.worker.engine_like import EngineLike
from gouache.worker.experiments import (
    experiment_job,
    is_experiment,
    loaded_model,
    process_artifacts,
)
from gouache.worker.jobs import Made, artifacts_for, batch_key_for, item_for, shape_of
from gouache.worker.loading import build_estimators

if TYPE_CHECKING:
    from PIL.Image import Image

    from gouache.generation.diversity.enlarge import Enlarged

__all__ = ["Worker", "EngineLike", "DeviceLost", "EXIT_DEVICE_LOST"]

log = logging.getLogger(__name__)
EXIT_DEVICE_LOST = 3


class DeviceLost(Exception):
    """The engine hit a sticky device error: this process must exit and be restarted."""


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
                        prefer=self.engine.resident_models(), patience_seconds=cfg.model_switch_seconds,
                    )
                    if jobs:
                        await self.serve(jobs, stop, join=stepped)
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

    async def serve(self, jobs: Sequence[Job], stop: asyncio.Event, *, join: bool) -> None:
        """One claim: its jobs' lanes in a running batch (newcomers join when ``join``), or a
        sweep, interpolation or ``--enlarge`` job run whole; every job ends on its own terms."""
        batching = self.settings.batching
        whole = jobs[0].request.runs_whole
        batch = None
        if not whole:
            try:
                batch = await asyncio.to_thread(
                    self.engine.running_batch, shape_of(jobs[0].request),
                    row_budget=batching.max_rows, decode_chunk=batching.decode_chunk,
                )  # fmt: skip
            except UserError as exc:  # e.g. an unknown model: every job of the claim fails alike
                for job in jobs:
                    await self.storage.fail(job.id, self.worker_id, exc.message)
                return
        run = BatchRun(self.storage, self.settings, self.worker_id, batch, self._finish, stop,
                       self.estimators.get, join=join)  # fmt: skip
        started = time.monotonic()
        try:
            if whole:  # claimed alone (their batch key is their own), one at a time anyway
                for job in jobs:
                    await run.run([job], self._run_whole)
            else:
                await run.run(jobs)
        except Exception as exc:
            if _is_device_lost(exc):
                raise DeviceLost(str(exc)) from exc
            log.exception("running batch failed with jobs %s", sorted(run.jobs))
            await run.fail_all(messages.internal_error)
            return
        self.batches += 1
        log.info("running batch: %d job(s) in %d steps, %.2fs", run.admitted, run.steps,
                 time.monotonic() - started)  # fmt: skip

    def _run_whole(
        self, job: Job, inputs: list[Artifact], on_step: Callable[[int, int], None],
        should_stop: Callable[[str], bool],
    ) -> tuple[ItemResult, list[Artifact] | None, Enlarged | None]:  # fmt: skip
        """A sweep or an interpolation (many lanes of their own), or /diversity --enlarge."""
        request = job.request
        if is_experiment(request):
            result, made = experiment_job(
                self.engine, job.id, request, inputs, self.settings.limits, self.settings.gif,
                on_step, should_stop, estimators=self.estimators.get,
                batching=self.settings.batching,
            )  # fmt: skip
            return result, made if result.ok else None, None
        from gouache.generation.diversity.enlarge import generate_enlarged

        item = item_for(job.id, request, inputs, self.settings.limits, self.settings.gif,
                        self.estimators.get)  # fmt: skip
        encoders = self.scorer.encoders_for(request.model)
        generate = lambda key, batch: self.engine.generate(key, batch, on_step, should_stop)  # noqa: E731
        enlarged = generate_enlarged(generate, batch_key_for(request), [item], request.enlarge,
                                     clip=encoders.clip, known=self.scorer.known_for(request.model))  # fmt: skip
        return enlarged[job.id].enlarged, None, enlarged[job.id]

    async def _finish(
        self, job: Job, result: ItemResult, made: list[Artifact] | None = None,
        enlarged: Enlarged | None = None, control: Image | None = None,
    ) -> None:  # fmt: skip
        try:
            await self._record(job, result, made, enlarged, control)
        except LeaseLost:
            # Our lease expired and another worker owns the job now: its result wins.
            log.warning("lease lost for job %s; dropping this worker's result", job.id)

    async def _record(
        self, job: Job, result: ItemResult, made: list[Artifact] | None = None,
        enlarged: Enlarged | None = None, control: Image | None = None,
    ) -> None:  # fmt: skip
        if result.cancelled:
            await self.storage.finish_cancelled(job.id, self.worker_id)
        elif result.error is not None:
            await self.storage.fail(job.id, self.worker_id, result.error.message)
        else:
            try:  # --process, the /diversity report and the safety check run on the GPU too
                artifacts = await asyncio.to_thread(self._artifacts, job, result, made, enlarged, control)
            except UserError as exc:  # out of memory there: this job fails, the batch goes on
                await self.storage.fail(job.id, self.worker_id, exc.message)
                return
            await self.storage.complete(job.id, self.worker_id, artifacts)

    def _artifacts(
        self, job: Job, result: ItemResult, made: Sequence[Artifact] | None = None,
        enlarged: Enlarged | None = None,
        control: Image | None = None,
    ) -> list[Artifact]:  # fmt: skip
        request, report, picture, how = job.request, None, None, None
        if request.spec.scored and len(result.images) > 1:
            from gouache.generation.diversity.report import scored

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
                names += [a.name for a in artifacts if a.index is None
                          and a.kind not in (ArtifactKind.REPORT, ArtifactKind.DEPTH)]  # fmt: skip
            artifacts.append(verdict_artifact(job.id, names))
        return artifacts


def _is_device_lost(exc: BaseException) -> bool:
    from gouache.generation.loop.device import FatalDeviceError  # torch: imported on demand

    return isinstance(exc, FatalDeviceError)

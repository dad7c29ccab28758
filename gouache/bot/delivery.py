"""Hands finished jobs to the adapter that owns their platform, exactly once per job.

The source of truth is the database: ``storage.undelivered`` lists terminal jobs without a
delivery receipt, so whatever finished while the bot was down is delivered when it comes
back. The receipt (``storage.mark_delivered``, keyed by job id) is written right after the
adapter posts; a crash between the two is the only window for a repeat post.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from gouache.bot.adapter import Adapter, Progress, Result, buttons_for
from gouache.bot.moderation import screen
from gouache.storage.base import Storage
from gouache.storage.jobs import ArtifactKind, Job, JobStatus

__all__ = ["Delivery", "GENERIC_FAILURE"]

log = logging.getLogger(__name__)

GENERIC_FAILURE = "Something went wrong while generating your images. Please try again."
_MAX_TRIES = 5  # per job; after that the receipt says "gave-up" so the loop moves on


class Delivery:
    """One loop per bot process: catch up, then poll for newly finished and running jobs."""

    def __init__(
        self,
        storage: Storage,
        adapters: Mapping[str, Adapter],
        *,
        flagged_action: str = "withhold",
        poll_seconds: float = 0.5,
        batch: int = 50,
        wake: asyncio.Event | None = None,
    ) -> None:
        self._storage = storage
        self._adapters = dict(adapters)
        self._flagged_action = flagged_action
        self._poll = poll_seconds
        self._batch = batch
        self._tries: dict[str, int] = {}
        self._shown: dict[str, float] = {}  # job id -> last progress shown
        self._wake = wake if wake is not None else asyncio.Event()  # set by admissions

    def wake(self) -> None:
        """Poll now instead of at the next tick (a job was just admitted or finished)."""
        self._wake.set()

    async def run(self) -> None:
        """Poll until cancelled; the first pass is the catch-up after a restart."""
        while True:
            try:
                await self.deliver_pending()
                await self.show_progress()
            except Exception:  # the database may be briefly unreachable; keep polling
                log.exception("delivery pass failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)

    async def deliver_pending(self) -> int:
        """Deliver every finished job that has no receipt yet; returns how many were posted."""
        if not self._adapters:
            return 0
        delivered = 0
        jobs = await self._storage.undelivered(list(self._adapters), limit=self._batch)
        for job in jobs:
            if await self._deliver_one(job):
                delivered += 1
        return delivered

    async def _deliver_one(self, job: Job) -> bool:
        adapter = self._adapters.get(job.request.origin.platform)
        if adapter is None:
            return False
        self._shown.pop(job.id, None)
        try:
            if job.status is JobStatus.SUCCEEDED:
                ref = await adapter.deliver(await self._result(job))
            else:
                ref = await adapter.report_error(job, job.error or GENERIC_FAILURE)
        except Exception:
            tries = self._tries[job.id] = self._tries.get(job.id, 0) + 1
            log.exception("delivering job %s to %s failed (try %d)", job.id, adapter.platform, tries)
            if tries < _MAX_TRIES:
                return False
            ref = "gave-up"
        self._tries.pop(job.id, None)
        if await self._storage.mark_delivered(job.id, ref):
            log.info("delivered job %s to %s (%s)", job.id, adapter.platform, job.status.value)
            return True
        log.warning("job %s was already delivered by another process", job.id)
        return False

    async def _result(self, job: Job) -> Result:
        artifacts = [
            a for a in await self._storage.artifacts(job.id) if a.kind is not ArtifactKind.INPUT
        ]
        adapter = self._adapters[job.request.origin.platform]
        screened = screen(artifacts, self._flagged_action, can_hide=adapter.can_hide_images)
        return Result(
            job=job,
            artifacts=screened.artifacts,
            buttons=buttons_for(job),
            hidden=screened.hidden,
            withheld=screened.withheld,
            notes=job.request.notes,
        )

    async def show_progress(self, min_step: float = 0.1) -> None:
        """Forward progress of running jobs to their adapters, at most every ``min_step``."""
        running = await self._storage.list_jobs(status=JobStatus.RUNNING, limit=self._batch)
        live = set()
        for job in running:
            adapter = self._adapters.get(job.request.origin.platform)
            if adapter is None:
                continue
            live.add(job.id)
            last = self._shown.get(job.id, -1.0)
            if last >= 0 and job.progress - last < min_step:
                continue
            self._shown[job.id] = job.progress
            try:
                await adapter.show_progress(Progress(job=job, fraction=job.progress))
            except Exception:  # progress is best effort; the result still gets delivered
                log.warning("progress update for job %s failed", job.id, exc_info=True)
        for job_id in set(self._shown) - live:
            self._shown.pop(job_id, None)

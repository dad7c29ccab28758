"""A user's own queue, the same on every platform: jobs with position and ETA; cancel newest.

``/queue`` shows these; ``/cancel`` without a job cancels the newest; its autocomplete offers
the same list. Cancel rules (owner only, finished jobs stay finished) are ``ButtonActions``'.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gouache import messages
from gouache.bot.actions import ButtonActions
from gouache.bot.admission import DEFAULT_SECONDS_PER_IMAGE
from gouache.errors import NotFound
from gouache.storage.base import Storage
from gouache.storage.jobs import Job, JobStatus

__all__ = ["Entry", "QueueView"]


@dataclass(frozen=True)
class Entry:
    job: Job
    position: int  # 0: running; 1: next in line
    eta_seconds: float | None  # until this job's images are done

    @property
    def label(self) -> str:
        """One short line naming the job (autocomplete choices, buttons)."""
        place = "running" if self.position < 1 else f"#{self.position}"
        return f"{place}: {messages.shorten(self.job.request.prompt, 80)}"


class QueueView:
    def __init__(
        self, storage: Storage, actions: ButtonActions,
        default_seconds_per_image: float = DEFAULT_SECONDS_PER_IMAGE,
    ) -> None:  # fmt: skip
        self._storage = storage
        self._actions = actions
        self._default_spi = default_seconds_per_image

    async def entries(self, user: str, limit: int = 25) -> list[Entry]:
        """The user's running jobs, then their queued ones in queue order (newest last)."""
        running = await self._storage.list_jobs(user=user, status=JobStatus.RUNNING, limit=limit)
        queued = await self._storage.list_jobs(user=user, status=JobStatus.QUEUED, limit=limit)
        stats = await self._storage.stats()
        spi = (stats.seconds_per_image or self._default_spi) / max(1, stats.active_workers)
        out = [Entry(j, 0, max(0.0, 1 - j.progress) * j.request.count * spi) for j in running]
        for job in queued:
            place = await self._storage.queue_position(job.id)
            if place is not None:
                out.append(Entry(job, place[0], place[1] * spi))
        out.sort(key=lambda e: (e.position, e.job.created_at))
        return out[:limit]

    async def render(
        self, user: str, escape: Callable[[str], str] = lambda s: s
    ) -> tuple[str, list[Entry]]:
        """The text ``/queue`` shows (prompts through the platform's ``escape``) and its entries."""
        entries = await self.entries(user)
        if not entries:
            return messages.nothing_queued(), []
        rows = [(e.position, escape(messages.shorten(e.job.request.prompt, 60)), e.eta_seconds)
                for e in entries]  # fmt: skip
        return messages.your_queue(rows), entries

    async def cancel(self, user: str, job_id: str | None = None) -> Job:
        """Cancel ``job_id`` (the user's own), or their newest unfinished job."""
        if job_id:
            return await self._actions.cancel(job_id, user)
        entries = await self.entries(user)
        if not entries:
            raise NotFound(messages.nothing_to_cancel())
        newest = max(entries, key=lambda e: e.job.created_at)
        return await self._actions.cancel(newest.job.id, user)

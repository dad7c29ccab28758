"""What a button press does, the same on every platform: cancel, reroll, make a GIF, diversify,
upscale (U) or vary (V) one image of a result.

Adapters decode the platform's button id and call these; the rules (only the author may cancel,
a finished job cannot be cancelled, a follow-up gets a fresh seed and keeps the /depth upload)
live here once.
"""

from __future__ import annotations

import secrets

from gouache import messages
from gouache.bot.adapter import Action, follow_up
from gouache.bot.commands import SEED_MAX
from gouache.bot.uploads import attach
from gouache.config import Limits
from gouache.errors import InvalidRequest, NotAllowed
from gouache.request import KINDS, PER_IMAGE, Origin, Request
from gouache.storage.base import Storage
from gouache.storage.jobs import Artifact, ArtifactKind, Job

__all__ = ["ButtonActions"]


class ButtonActions:
    """Turns a button press on a job into a cancellation or a new request."""

    def __init__(self, storage: Storage, limits: Limits) -> None:
        self._storage = storage
        self._limits = limits

    async def cancel(self, job_id: str, user: str) -> Job:
        job = await self._storage.get_job(job_id)
        if job.user != user:
            raise NotAllowed(messages.not_your_job())
        if job.is_terminal:
            raise InvalidRequest(messages.already_finished())
        return await self._storage.cancel(job.id)

    async def follow_up(
        self, job_id: str, action: Action, origin: Origin, index: int | None = None
    ) -> tuple[Request, list[Artifact]]:
        """The request the press stands for (``origin`` is the presser) and its uploads.

        U and V (``index``: which image) start from that image of the job: it is attached as
        an upload would be (``uploads.attach``: the same reader, the output size)."""
        job = await self._storage.get_job(job_id)
        request = follow_up(
            job.request,
            action,
            origin,
            seed=secrets.randbelow(SEED_MAX + 1),
            diversity_count=self._limits.diversity_count,
            max_images=self._limits.max_images,
            seed_max=SEED_MAX,
            index=index,
        )
        if action in PER_IMAGE:
            images = [a for a in await self._storage.artifacts(job.id)
                      if a.kind is ArtifactKind.IMAGE and a.index == (index or 0)]  # fmt: skip
            if not images:
                raise InvalidRequest(messages.image_gone())
            return attach(request, images[0].data, self._limits)
        return request, (await self._inputs(job.id) if request.attachment else [])

    async def job_in_thread(self, platform: str, channel: str, thread: str) -> Job | None:
        """The result a reply in ``thread`` answers: the thread's latest succeeded job."""
        return await self._storage.job_in_thread(platform, channel, thread)

    async def remix_reply(self, job_id: str, request: Request, index: int = 0) -> tuple[Request, list[Artifact]]:
        """A reply to one of our results (a Slack thread reply, a Discord message reply, the
        web's "Remix" on a result): ``request`` starts from that result's image ``index`` (its
        first by default), read as an upload would be. Only commands that take an image
        (``request.KINDS``) can."""
        if request.spec.image == "none":
            takes = [f"/{kind.value}" for kind, spec in KINDS.items() if spec.image != "none"]
            raise InvalidRequest(messages.reply_takes_no_image(request.kind.value, takes))
        images = [a for a in await self._storage.artifacts(job_id)
                  if a.kind is ArtifactKind.IMAGE and a.index == index]  # fmt: skip
        if not images:
            raise InvalidRequest(messages.image_gone())
        return attach(request, images[0].data, self._limits)

    async def _inputs(self, job_id: str) -> list[Artifact]:
        """The job's uploads, copied for a follow-up (a /depth job keeps its map)."""
        return [Artifact("", a.name, a.kind, a.mime, a.data)
                for a in await self._storage.artifacts(job_id) if a.kind is ArtifactKind.INPUT]  # fmt: skip

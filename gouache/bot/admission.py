"""Admission: who may use the bot, how fast, how much may wait; then the job is enqueued.

Order: allowlists -> an admin's pause (``PAUSED_FLAG``, shared through the database) ->
per-user token bucket -> per-user pending cap -> global queue cap ->
enqueue. The bucket and the caps are checked inside the enqueue transaction (``Quota``), so
several bot processes share them, a refusal takes no token, and a re-delivered platform event
(same request id) returns the existing job without taking a second token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gouache import messages
from gouache.bot.generator import GeneratorWatch
from gouache.config import Admission as AdmissionSettings
from gouache.config import Settings
from gouache.errors import NotAllowed, QueueFull, QueuePaused, RateLimited
from gouache.request import Request
from gouache.storage.base import Quota, QuotaRefused, Storage
from gouache.storage.jobs import Artifact, Job

__all__ = ["Admission", "Admits", "Admitted", "DEFAULT_SECONDS_PER_IMAGE", "PAUSED_FLAG"]

PAUSED_FLAG = "paused"  # bot_flags row set by ``/gouache pause``: nothing new is admitted

DEFAULT_SECONDS_PER_IMAGE = 5.0  # before any batch has finished: a modest GPU, SD1.5, 30 steps
_CHAT_PLATFORMS = frozenset({"discord", "slack"})


@dataclass(frozen=True)
class Admitted:
    job: Job
    created: bool  # False: the platform re-sent a request we already had
    position: int  # 1 = next in line; 0 = already running or finished
    eta_seconds: float | None  # until this job's images are done; None when not queued
    generator_running: bool = True  # False: no worker heartbeats, so no ETA can be promised
    generator_starting: bool = False  # our worker's first start: it will be running shortly

    @property
    def message(self) -> str:
        if self.position < 1:
            return messages.started()
        return messages.queued(self.position, self.eta_seconds, generator_running=self.generator_running,
                               generator_starting=self.generator_starting)  # fmt: skip


class Admits(Protocol):
    """``Admission`` or anything wrapping it (``ModeratedAdmission``): what adapters call."""

    async def admit(self, request: Request, inputs: Sequence[Artifact] = ()) -> Admitted: ...


class Admission:
    """Gatekeeper in front of ``Storage.enqueue``; one per process, shared by every adapter."""

    def __init__(
        self,
        storage: Storage,
        policy: AdmissionSettings | Settings,
        *,
        default_seconds_per_image: float = DEFAULT_SECONDS_PER_IMAGE,
        watch: GeneratorWatch | None = None,
    ) -> None:
        self._storage = storage
        self._watch = watch  # None: assume a worker runs (tests, tools)
        self._policy = policy.admission if isinstance(policy, Settings) else policy
        self._default_spi = default_seconds_per_image

    @property
    def quota(self) -> Quota:
        p = self._policy
        return Quota(p.rate_per_minute / 60.0, p.burst, p.max_pending_per_user, p.max_queue,
                     p.max_pending_per_guild)  # fmt: skip

    async def admit(self, request: Request, inputs: Sequence[Artifact] = ()) -> Admitted:
        """Enqueue ``request`` or raise ``NotAllowed``, ``RateLimited`` or ``QueueFull``."""
        self.check_allowed(request)
        if await self._storage.get_flag(PAUSED_FLAG) is not None:
            raise QueuePaused(messages.queue_paused())
        quota = self.quota
        if request.origin.user in self._policy.admin_users:
            quota = Quota(1e6, 1_000_000, 1_000_000, quota.max_queue)  # admins: only the global cap
        try:
            job, created = await self._storage.enqueue(request, inputs, quota)
        except QuotaRefused as refused:
            raise self._refusal(refused, request) from refused
        position, eta, running, starting = await self._place(job)
        return Admitted(job, created, position, eta, running, starting)

    def check_allowed(self, request: Request) -> None:
        """Empty allowlists allow everything; web and CLI requests have no guild or channel."""
        origin, p = request.origin, self._policy
        if origin.platform not in _CHAT_PLATFORMS or origin.user in p.admin_users:
            return
        guilds = p.allowed_guilds if origin.platform == "discord" else p.allowed_workspaces
        if guilds and origin.guild not in guilds:
            where = "in this server" if origin.platform == "discord" else "in this workspace"
            raise NotAllowed(messages.not_allowed(where if origin.guild else "in direct messages"))
        if p.allowed_channels and origin.channel not in p.allowed_channels:
            raise NotAllowed(messages.not_allowed("in this channel"))

    def _refusal(self, refused: QuotaRefused, request: Request) -> RateLimited | QueueFull:
        p = self._policy
        if refused.limit == "rate":
            limit = f"the limit is {messages.number(p.rate_per_minute)} per minute, bursts of {p.burst}"
            return RateLimited(f"{messages.rate_limited(refused.retry_after)} ({limit})", refused.retry_after)
        if refused.limit == "user_pending":
            return QueueFull(messages.user_queue_full(p.max_pending_per_user, p.max_pending_per_user))
        if refused.limit == "guild_pending":
            return QueueFull(messages.guild_queue_full(p.max_pending_per_guild))
        return QueueFull(f"{messages.queue_full()} (it holds at most {p.max_queue} requests)")

    async def _place(self, job: Job) -> tuple[int, float | None, bool, bool]:
        """Position in fair order, an ETA from recent throughput (seconds per image), and
        whether a worker is running at all (without one there is no ETA to give)."""
        place = await self._storage.queue_position(job.id)
        if place is None:
            return 0, None, True, False
        jobs_ahead, images_through_mine = place
        stats = await self._storage.stats()
        state = self._watch.judge(stats) if self._watch is not None else None
        if state is not None and not state.live:
            return jobs_ahead, None, False, state.starting
        spi = stats.seconds_per_image or self._default_spi
        return jobs_ahead, images_through_mine * spi / max(1, stats.active_workers), True, False

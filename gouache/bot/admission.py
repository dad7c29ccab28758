"""Admission: who may use the bot, how fast, how much may wait; then the job is enqueued.

Order: allowlists -> an admin's pause (``PAUSED_FLAG``, shared through the database) ->
per-user token bucket -> the web group's bucket -> per-user pending cap -> per-guild (or web
group) pending cap -> the platform's share of the queue -> global queue cap -> enqueue.
Anonymous web users are cheap to make, so they all also count in one group (``WEB_GROUP``,
their ``guild``): however many identities one client collects, the group's caps hold. The bucket and the caps are checked inside the enqueue transaction (``Quota``), so
several bot processes share them, a refusal takes no token, and a re-delivered platform event
(same request id) returns the existing job without taking a second token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from gouache import messages
from gouache.bot.generator import GeneratorWatch
from gouache.config import Admission as AdmissionSettings
from gouache.config import Settings, WebSettings
from gouache.errors import NotAllowed, QueueFull, QueuePaused, RateLimited
from gouache.request import Request
from gouache.storage.base import Quota, QuotaRefused, Storage
from gouache.storage.jobs import Artifact, Job

__all__ = [
    "Admission", "Admits", "Admitted", "DEFAULT_SECONDS_PER_IMAGE", "PAUSED_FLAG", "WEB_GROUP",
]  # fmt: skip

PAUSED_FLAG = "paused"  # bot_flags row set by ``/gouache pause``: nothing new is admitted

DEFAULT_SECONDS_PER_IMAGE = 5.0  # before any batch has finished: a modest GPU, SD1.5, 30 steps
_CHAT_PLATFORMS = frozenset({"discord", "slack"})
WEB_GROUP = "web"  # the guild of every anonymous web user (named [web.users] have none)
_GROUP_BUCKET = "group:web"


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
        self._web = policy.web if isinstance(policy, Settings) else WebSettings()
        self._default_spi = default_seconds_per_image

    @property
    def quota(self) -> Quota:
        p = self._policy
        return Quota(p.rate_per_minute / 60.0, p.burst, p.max_pending_per_user, p.max_queue,
                     p.max_pending_per_guild)  # fmt: skip

    def quota_for(self, request: Request) -> Quota:
        """The quota for this request's platform and group (admins: only the global cap)."""
        origin, quota = request.origin, self.quota
        if origin.user in self._policy.admin_users:
            return Quota(1e6, 1_000_000, 1_000_000, quota.max_queue)
        share = self._policy.queue_cap(origin.platform)
        if share < quota.max_queue:
            quota = replace(quota, max_queued_platform=share)
        if origin.platform == "web" and origin.guild == WEB_GROUP:
            w = self._web
            quota = replace(quota, group_bucket=_GROUP_BUCKET, group_burst=w.group_burst,
                            group_rate_per_second=w.group_rate_per_minute / 60.0)  # fmt: skip
        return quota

    async def admit(self, request: Request, inputs: Sequence[Artifact] = ()) -> Admitted:
        """Enqueue ``request`` or raise ``NotAllowed``, ``RateLimited`` or ``QueueFull``."""
        self.check_allowed(request)
        if await self._storage.get_flag(PAUSED_FLAG) is not None:
            raise QueuePaused(messages.queue_paused())
        try:
            job, created = await self._storage.enqueue(request, inputs, self.quota_for(request))
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
        p, web_group = self._policy, request.origin.guild == WEB_GROUP
        if refused.limit == "rate":
            text = messages.rate_limited(refused.retry_after, p.rate_per_minute, p.burst)
            return RateLimited(text, refused.retry_after)
        if refused.limit == "group_rate":
            return RateLimited(messages.web_group_busy(refused.retry_after), refused.retry_after)
        if refused.limit == "user_pending":
            return QueueFull(messages.user_queue_full(p.max_pending_per_user, p.max_pending_per_user))
        if refused.limit == "guild_pending":
            if web_group:
                return QueueFull(messages.web_group_full(p.max_pending_per_guild))
            return QueueFull(messages.guild_queue_full(p.max_pending_per_guild))
        if refused.limit == "platform_queue":
            return QueueFull(messages.platform_queue_full(request.origin.platform, int(refused.maximum)))
        return QueueFull(messages.queue_full(p.max_queue))

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

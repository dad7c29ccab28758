"""The storage seam: one protocol, two real backends (SQLite, PostgreSQL), one test suite.

Backends map driver errors to domain errors (``from exc``); nothing above this package sees
aiosqlite or asyncpg. Every method is one short transaction: no transaction is ever held across
GPU work. ``claim_batch`` is the one method that may wait (the batch window), between
transactions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, Protocol, Self, runtime_checkable

from gouache import messages
from gouache.errors import GouacheError, NotFound
from gouache.request import Request
from gouache.storage.jobs import Artifact, ArtifactKind, Job, JobStatus

__all__ = [
    "ClaimKey",
    "Storage",
    "Quota",
    "QueueStats",
    "Flag",
    "Usage",
    "StorageError",
    "StorageUnavailable",
    "LeaseLost",
    "QuotaRefused",
    "job_from_row",
    "artifact_from_row",
    "dead_reason",
    "job_not_found",
    "to_datetime",
]


# Which key a claim groups jobs by: request-level batches share every setting but prompts and
# seeds; step-level batches share only model and latent size (``Request.shape_key``).
ClaimKey = Literal["batch_key", "shape_key"]


@dataclass(frozen=True)
class Quota:
    """Admission limits checked in the enqueue transaction, so bot processes share them."""

    rate_per_second: float
    burst: int
    max_pending_per_user: int
    max_queue: int
    max_pending_per_guild: int = 1_000_000  # per Discord guild / Slack workspace / web group
    max_queued_platform: int | None = None  # queued jobs the request's platform may hold
    # A second bucket every member of a group shares (the anonymous web users): "" for none.
    group_bucket: str = ""
    group_rate_per_second: float = 0.0
    group_burst: int = 0

    @property
    def idle_seconds(self) -> float:
        """How long until any of this quota's buckets has refilled: older rows may go."""
        times = [self.burst / self.rate_per_second]
        if self.group_bucket and self.group_rate_per_second > 0:
            times.append(self.group_burst / self.group_rate_per_second)
        return max(3600.0, *times)


@dataclass(frozen=True)
class QueueStats:
    queued_jobs: int
    queued_images: int
    running_jobs: int
    user_pending: int  # queued + running jobs of the user asked about (0 when none asked)
    seconds_per_image: float | None  # recent batches; None before the first finished batch
    active_workers: int  # workers seen in the last two minutes
    last_worker_seen: datetime | None


@dataclass(frozen=True)
class Flag:
    """A setting every bot process shares (``bot_flags``), e.g. an admin's pause."""

    name: str
    value: str
    updated_by: str
    updated_at: datetime | None


@dataclass(frozen=True)
class Usage:
    """Jobs and image-steps (images x steps) one user asked for in one guild or workspace."""

    platform: str
    guild: str
    user: str
    jobs: int
    image_steps: int


class StorageError(GouacheError):
    """The database refused or failed an operation (a bug or an outage, never the user's)."""


class StorageUnavailable(StorageError):
    """The database could not be reached even after retrying; callers may retry later."""


class LeaseLost(StorageError):
    """A worker wrote to a job it no longer holds (lease expired and re-claimed, or finished)."""


class QuotaRefused(GouacheError):
    """Enqueue refused by a ``Quota``: "rate", "group_rate", "user_pending", "guild_pending",
    "platform_queue" or "queue"."""

    def __init__(
        self,
        limit: Literal["rate", "group_rate", "user_pending", "guild_pending", "platform_queue",
                       "queue"],
        maximum: float,
        retry_after: float = 0.0,
    ) -> None:
        super().__init__(f"quota {limit} reached (max {maximum:g})")
        self.limit = limit
        self.maximum = maximum
        self.retry_after = retry_after


@runtime_checkable
class Storage(Protocol):
    """What the bot, the worker and the web server need from the database."""

    url: str

    async def close(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    # --- producing -------------------------------------------------------------------------
    async def enqueue(
        self, request: Request, inputs: Sequence[Artifact] = (), quota: Quota | None = None
    ) -> tuple[Job, bool]:
        """Insert a queued job with its uploads, idempotent on (platform, request_id).

        Returns (job, created). With a quota, a duplicate is returned before any token is
        taken, and a refusal (``QuotaRefused``) rolls the whole transaction back.
        """

    async def cancel(self, job_id: str) -> Job:
        """Queued jobs become cancelled at once; running ones get cancel_requested."""

    # --- consuming (the worker) ------------------------------------------------------------
    async def claim_batch(
        self, worker_id: str, max_images: int, lease_seconds: float, window_seconds: float = 0.0,
        *, by: ClaimKey = "batch_key", models: Sequence[str] = (), prefer: Sequence[str] = (),
        patience_seconds: float = 0.0,
    ) -> list[Job]:  # fmt: skip
        """Claim up to max_images images of jobs sharing one key, fair across users.

        ``by="batch_key"`` (request-level batching: everything equal but prompts and seeds) or
        ``"shape_key"`` (step-level: same model and latent size). Waits at most
        ``window_seconds`` (counted from the head job's arrival) for a fuller batch; never waits
        when the batch is full; returns [] at once when nothing is queued. ``models``: only
        jobs for these models (a worker of one model group); empty: every model. ``prefer``:
        models already on this worker's card, whose fairest job goes first while the fairest
        job overall, for another model, has waited less than ``patience_seconds``.
        """

    async def claim_joiners(
        self, worker_id: str, shape_key: str, max_images: int, lease_seconds: float
    ) -> list[Job]:
        """Claim queued jobs of ``shape_key`` that fit ``max_images``, fair order, no waiting:
        the newcomers a running step-level batch takes between two steps."""

    async def heartbeat(
        self, worker_id: str, job_ids: Sequence[str], lease_seconds: float
    ) -> set[str]:
        """Record the worker as alive, extend its leases; returns ids whose cancel was requested."""

    async def set_progress(self, job_id: str, progress: float, worker_id: str | None = None) -> bool:
        """False when the job is no longer running (for that worker)."""

    async def complete(self, job_id: str, worker_id: str, artifacts: Sequence[Artifact]) -> Job:
        """Store artifacts (upsert by name) and finish; ``LeaseLost`` unless worker_id holds it."""

    async def fail(self, job_id: str, worker_id: str, message: str) -> Job:
        """Finish as failed (or cancelled when a cancel was requested); ``LeaseLost`` as above."""

    async def finish_cancelled(self, job_id: str, worker_id: str) -> Job:
        """The worker stopped a job whose cancel was requested; ``LeaseLost`` as above."""

    async def worker_seen(self, worker_id: str) -> None:
        """Liveness for an idle worker (``heartbeat`` records it as well)."""

    async def release(self, worker_id: str, job_ids: Sequence[str] | None = None) -> list[Job]:
        """Hand back running jobs this worker will not finish (it is draining on SIGTERM).

        They are queued again at once, not after their lease, and the attempt is not counted;
        a job whose cancel was requested ends cancelled instead. Ids this worker does not hold
        are left alone; ``job_ids=None``: every job it holds. Returns the jobs as they are now.
        """

    async def requeue_expired(self, max_attempts: int) -> list[Job]:
        """Sweeper: expired leases go back to queued, or to dead once attempts >= max_attempts."""

    async def wait_for_event(self, timeout: float) -> bool:
        """Sleep until something was enqueued/finished (True) or ``timeout`` passed (False).

        A hint only: PostgreSQL wakes on NOTIFY, SQLite on this process's own writes; callers
        must still poll.
        """

    # --- reading ---------------------------------------------------------------------------
    async def get_job(self, job_id: str) -> Job: ...

    async def list_jobs(
        self, *, user: str | None = None, status: JobStatus | None = None, limit: int = 50
    ) -> list[Job]: ...

    async def artifacts(self, job_id: str) -> list[Artifact]: ...

    async def queue_position(self, job_id: str) -> tuple[int, int] | None:
        """(jobs ahead + 1, images ahead including this job's) in fair order; None unless queued."""

    async def stats(self, user: str | None = None) -> QueueStats: ...

    # --- shared flags and admin ----------------------------------------------------------
    async def get_flag(self, name: str) -> Flag | None:
        """The flag's row, or None when it is off."""

    async def set_flag(self, name: str, value: str | None, updated_by: str = "") -> bool:
        """Set (``value``) or clear (None) a flag; False when clearing one that was not set."""

    async def reset_rate_limit(self, user: str) -> bool:
        """Forget the user's token bucket (full burst again); False when they had none."""

    async def usage(self, seconds: float) -> list[Usage]:
        """Per (platform, guild, user): jobs created in the last ``seconds``, busiest first."""

    # --- delivery --------------------------------------------------------------------------
    async def undelivered(self, platforms: Sequence[str], limit: int = 50) -> list[Job]:
        """Finished jobs (any terminal state) from these platforms with no delivery receipt."""

    async def mark_delivered(self, job_id: str, ref: str = "") -> bool:
        """Record delivery once; False when it was already delivered."""

    async def delivery_state(self, job_id: str) -> dict[str, Any]:
        """What an adapter stored for this job with ``set_delivery_state``; {} when nothing."""

    async def set_delivery_state(self, job_id: str, state: Mapping[str, Any]) -> None:
        """Replace the job's adapter state (a JSON object: message ids, fallbacks taken).

        Kept in the database so a restarted bot edits the messages it already posted. The
        state's ``channel`` and ``thread`` (where the job's replies go) are also kept as
        indexed columns for ``job_in_thread``.
        """

    async def job_in_thread(self, platform: str, channel: str, thread: str) -> Job | None:
        """The latest succeeded job of ``platform`` whose delivery state says its result went
        to ``thread`` of ``channel`` (a reply in that thread remixes it); None when none."""


def dead_reason(attempts: int) -> str:
    """The user-facing reason a job went dead (kept beside the state change that sets it)."""
    times = "once" if attempts == 1 else f"{attempts} times"
    return f"This job crashed the GPU worker {times} and was stopped. Try a smaller request."


def job_not_found(job_id: str) -> NotFound:
    return NotFound(messages.job_not_found(job_id))


def to_datetime(value: Any) -> datetime | None:
    """SQLite stores unix seconds, PostgreSQL timestamptz: both become aware datetimes."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromtimestamp(float(value), UTC)


def job_from_row(row: Mapping[str, Any]) -> Job:
    params = row["params"]
    request = Request.from_dict(params if isinstance(params, dict) else json.loads(params))
    return Job(
        id=row["id"],
        request=request,
        status=JobStatus(row["status"]),
        attempts=row["attempts"],
        created_at=to_datetime(row["created_at"]),  # type: ignore[arg-type]
        updated_at=to_datetime(row["updated_at"]),  # type: ignore[arg-type]
        started_at=to_datetime(row["started_at"]),
        finished_at=to_datetime(row["finished_at"]),
        lease_until=to_datetime(row["lease_until"]),
        worker_id=row["worker_id"],
        progress=float(row["progress"]),
        error=row["error"],
        cancel_requested=bool(row["cancel_requested"]),
    )


def artifact_from_row(row: Mapping[str, Any]) -> Artifact:
    return Artifact(
        job_id=row["job_id"],
        name=row["name"],
        kind=ArtifactKind(row["kind"]),
        mime=row["mime"],
        data=bytes(row["data"]),
        index=row["image_index"],
    )

"""The storage seam: one protocol, two real backends (SQLite, PostgreSQL), one test suite.

Backends map driver errors to domain errors (``from exc``); nothing above this package sees
aiosqlite or asyncpg. Every method is one short transaction: no transaction is ever held across
GPU work.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from gouache.bot.request import Request
from gouache.storage.jobs import Artifact, Job, JobStatus

__all__ = ["Storage", "EnqueueResult", "QueueStats"]


class EnqueueResult(Protocol):
    job: Job
    created: bool  # False when (platform, request_id) already had a job


class QueueStats(Protocol):
    queued_jobs: int
    queued_images: int
    running_jobs: int


@runtime_checkable
class Storage(Protocol):
    """What the bot, the worker and the web server need from the database."""

    url: str

    async def close(self) -> None: ...

    # --- producing -------------------------------------------------------------------------
    async def enqueue(
        self, request: Request, inputs: Sequence[Artifact] = ()
    ) -> tuple[Job, bool]:
        """Insert a queued job (idempotent on platform + request_id); returns (job, created)."""

    async def cancel(self, job_id: str) -> Job:
        """Queued jobs become cancelled at once; running ones get cancel_requested."""

    # --- consuming (the worker) ------------------------------------------------------------
    async def claim_batch(
        self, worker_id: str, max_images: int, lease_seconds: float, window_seconds: float = 0.0
    ) -> list[Job]:
        """Claim up to max_images images of jobs sharing one batch key, fair across users."""

    async def heartbeat(self, worker_id: str, job_ids: Sequence[str], lease_seconds: float) -> set[str]:
        """Extend leases; returns ids whose cancellation was requested."""

    async def set_progress(self, job_id: str, progress: float) -> None: ...

    async def complete(self, job_id: str, worker_id: str, artifacts: Sequence[Artifact]) -> Job: ...

    async def fail(self, job_id: str, worker_id: str, message: str) -> Job: ...

    async def requeue_expired(self, max_attempts: int) -> list[Job]:
        """Sweeper: expired leases go back to queued, or to dead after max_attempts."""

    # --- reading ---------------------------------------------------------------------------
    async def get_job(self, job_id: str) -> Job: ...

    async def list_jobs(
        self, *, user: str | None = None, status: JobStatus | None = None, limit: int = 50
    ) -> list[Job]: ...

    async def artifacts(self, job_id: str) -> list[Artifact]: ...

    async def queue_position(self, job_id: str) -> int | None: ...

    async def stats(self) -> QueueStats: ...

    # --- delivery --------------------------------------------------------------------------
    async def undelivered(self, platforms: Sequence[str], limit: int = 50) -> list[Job]: ...

    async def mark_delivered(self, job_id: str, ref: str = "") -> bool:
        """Record delivery once; False when it was already delivered."""

    # --- admission and health --------------------------------------------------------------
    async def take_token(
        self, user: str, rate_per_second: float, burst: int, now: datetime | None = None
    ) -> float:
        """Token bucket; 0.0 when a token was taken, else seconds until one is free."""

    async def pending_count(self, user: str | None = None) -> int: ...

    async def worker_seen(self, worker_id: str) -> None: ...

    async def last_worker_heartbeat(self) -> datetime | None: ...

"""The queue's transactions, written once over a tiny connection seam (procrastinate's manager).

A backend supplies ``_run(body)``: open a short transaction, hand ``body`` a ``Conn`` that runs
named queries with keyword parameters, commit, retry what is safe to retry and map driver
errors. Everything else (idempotent enqueue, quotas, claims, leases) lives here, so SQLite and
PostgreSQL cannot drift apart.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from types import TracebackType
from typing import Any, ClassVar, Literal, Protocol, Self, TypeVar
from uuid import uuid4

from gouache.request import Origin, Request
from gouache.storage.base import (
    ClaimKey,
    Flag,
    LeaseLost,
    QueueStats,
    Quota,
    QuotaRefused,
    Usage,
    artifact_from_row,
    dead_reason,
    job_from_row,
    job_not_found,
    to_datetime,
)
from gouache.storage.batching import (
    Head,
    claim_with_window,
    fair_cost,
    refill,
    seconds_until_token,
    select_batch,
)
from gouache.storage.jobs import Artifact, Job, JobStatus
from gouache.storage.queries import Dialect

__all__ = ["Conn", "SqlStorage", "Wakeup", "CANCELLED_MESSAGE"]

T = TypeVar("T")
Row = Mapping[str, Any]
CANCELLED_MESSAGE = "Cancelled."
ACTIVE_WORKER_SECONDS = 120.0


class Conn(Protocol):
    """One open transaction: named queries, keyword parameters."""

    async def fetch(self, name: str, /, **params: Any) -> list[Row]: ...

    async def fetchrow(self, name: str, /, **params: Any) -> Row | None: ...

    async def execute(self, name: str, /, **params: Any) -> None: ...


class Wakeup:
    """Fan-out wake-up: every waiter sees a fire that happens while it waits."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._event.wait(), max(0.0, timeout))
        except TimeoutError:
            return False
        return True


class _Duplicate(Exception):
    """Insert lost a race on (platform, request_id): roll back, then read the winner."""


class SqlStorage:
    """Storage over named SQL; subclasses provide ``_run``, ``close`` and wake-ups."""

    dialect: ClassVar[Dialect]
    url: str

    def __init__(self, url: str, poll_seconds: float) -> None:
        self.url = url
        self.poll_seconds = poll_seconds
        self._wakeup = Wakeup()

    async def _run(self, body: Callable[[Conn], Awaitable[T]], *, write: bool = True) -> T:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def wait_for_event(self, timeout: float) -> bool:
        return await self._wakeup.wait(timeout)

    async def _one(self, name: str, /, **params: Any) -> Row | None:
        async def body(conn: Conn) -> Row | None:
            return await conn.fetchrow(name, **params)

        return await self._run(body, write=False)

    # --- producing -------------------------------------------------------------------------
    async def enqueue(
        self, request: Request, inputs: Sequence[Artifact] = (), quota: Quota | None = None
    ) -> tuple[Job, bool]:
        origin = request.origin
        key = {"platform": origin.platform, "request_id": origin.request_id}
        new_id = str(uuid4())  # fixed across retries: finding it means our commit landed

        async def body(conn: Conn) -> tuple[Job, bool]:
            existing = await conn.fetchrow("get_by_request", **key)
            if existing is not None:
                return job_from_row(existing), existing["id"] == new_id
            if quota is not None:
                await _take_quota(conn, origin, quota)
            row = await conn.fetchrow(
                "insert_job", id=new_id, user_id=origin.user, channel=origin.channel,
                guild=origin.guild, kind=request.kind.value, params=request.to_json(),
                batch_key=request.batch_key, shape_key=request.shape_key, model=request.model,
                images=request.images,
                fair_cost=fair_cost(request.image_steps), **key,
            )  # fmt: skip
            if row is None:
                raise _Duplicate
            for artifact in inputs:
                await _upsert_artifact(conn, row["id"], artifact)
            await conn.execute("notify", event="queued")
            return job_from_row(row), True

        try:
            return await self._run(body)
        except _Duplicate:
            row = await self._one("get_by_request", **key)
            assert row is not None
            return job_from_row(row), False

    async def cancel(self, job_id: str) -> Job:
        async def body(conn: Conn) -> Job:
            row = await conn.fetchrow("cancel", id=job_id, message=CANCELLED_MESSAGE)
            if row is None:
                raise job_not_found(job_id)
            await conn.execute("notify", event="finished")
            return job_from_row(row)

        return await self._run(body)

    # --- consuming -------------------------------------------------------------------------
    async def claim_batch(
        self, worker_id: str, max_images: int, lease_seconds: float, window_seconds: float = 0.0,
        *, by: ClaimKey = "batch_key", models: Sequence[str] = (), prefer: Sequence[str] = (),
        patience_seconds: float = 0.0,
    ) -> list[Job]:  # fmt: skip
        if max_images < 1:
            raise ValueError(f"max_images must be >= 1, got {max_images}")
        claim = partial(self._claim, worker_id, max_images, lease_seconds, by)
        peek = partial(self._peek_preferring, by, list(models) or None, list(prefer), patience_seconds)
        return await claim_with_window(peek, claim, self.wait_for_event, max_images, window_seconds,
                                       self.poll_seconds)  # fmt: skip

    async def _peek_preferring(self, by: ClaimKey, models: list[str] | None, prefer: list[str],
                               patience: float) -> Head | None:  # fmt: skip
        """The fairest job's head, or the fairest among ``prefer`` (models already on the card)
        while the fairest job overall, for another model, has waited less than ``patience``."""
        head = await self._peek(by, models)
        if head is None or not prefer or head.model in prefer or head.age_seconds >= patience:
            return head
        preferred = [m for m in prefer if models is None or m in models]
        return (await self._peek(by, preferred) if preferred else None) or head

    async def claim_joiners(
        self, worker_id: str, shape_key: str, max_images: int, lease_seconds: float
    ) -> list[Job]:
        if max_images < 1:
            return []
        return await self._claim(
            worker_id, max_images, lease_seconds, "shape_key", shape_key, fresh_only=True
        )

    async def _peek(self, by: ClaimKey = "batch_key", models: list[str] | None = None) -> Head | None:
        row = await self._one("head" if by == "batch_key" else "head_by_shape", models=models)
        if row is None or row["batch_key"] is None:
            return None
        return Head(row["batch_key"], float(row["age"]), int(row["images"] or 0), row["attempts"] > 0,
                    row["model"])  # fmt: skip

    async def _claim(
        self, worker_id: str, max_images: int, lease_seconds: float, by: ClaimKey, batch_key: str,
        *, fresh_only: bool = False,
    ) -> list[Job]:  # fmt: skip
        """``fresh_only``: joiners of a running batch; a job that crashed a worker never joins."""
        query = "claim_candidates" if by == "batch_key" else "claim_candidates_by_shape"

        async def body(conn: Conn) -> list[Job]:
            rows = await conn.fetch(query, batch_key=batch_key, limit=max_images + 32)
            rows = [r for r in rows if r["attempts"] == 0] if fresh_only else rows
            ids = select_batch([(r["id"], r["images"], r["attempts"]) for r in rows], max_images)
            if not ids:
                return []
            await conn.execute("touch_worker", worker_id=worker_id)
            claimed = await conn.fetch(
                "claim", ids=ids, worker_id=worker_id, lease=float(lease_seconds)
            )
            order = {job_id: i for i, job_id in enumerate(ids)}
            return sorted((job_from_row(r) for r in claimed), key=lambda job: order[job.id])

        return await self._run(body)

    async def heartbeat(
        self, worker_id: str, job_ids: Sequence[str], lease_seconds: float
    ) -> set[str]:
        """Returns ids to stop: cancel requested, or no longer held by this worker."""

        async def body(conn: Conn) -> set[str]:
            await conn.execute("touch_worker", worker_id=worker_id)
            if not job_ids:
                return set()
            rows = await conn.fetch(
                "heartbeat", worker_id=worker_id, ids=list(job_ids), lease=float(lease_seconds)
            )
            held = {r["id"] for r in rows}
            return {r["id"] for r in rows if r["cancel_requested"]} | (set(job_ids) - held)

        return await self._run(body)

    async def set_progress(self, job_id: str, progress: float, worker_id: str | None = None) -> bool:
        value = min(1.0, max(0.0, float(progress)))

        async def body(conn: Conn) -> bool:
            row = await conn.fetchrow("set_progress", id=job_id, progress=value, worker_id=worker_id)
            return row is not None

        return await self._run(body)

    async def complete(self, job_id: str, worker_id: str, artifacts: Sequence[Artifact]) -> Job:
        async def body(conn: Conn) -> Job:
            if await _hold(conn, job_id, worker_id, JobStatus.SUCCEEDED) is None:
                return await _get(conn, job_id)  # a retried complete that already committed
            for artifact in artifacts:
                await _upsert_artifact(conn, job_id, artifact)
            row = await conn.fetchrow("finish", id=job_id, status="succeeded", error=None)
            await conn.execute("notify", event="finished")
            return job_from_row(row)  # type: ignore[arg-type]

        return await self._run(body)

    async def fail(self, job_id: str, worker_id: str, message: str) -> Job:
        async def body(conn: Conn) -> Job:
            lock = await _hold(conn, job_id, worker_id, JobStatus.FAILED, JobStatus.CANCELLED)
            if lock is None:
                return await _get(conn, job_id)
            cancelled = bool(lock["cancel_requested"])
            status, error = ("cancelled", CANCELLED_MESSAGE) if cancelled else ("failed", message)
            row = await conn.fetchrow("finish", id=job_id, status=status, error=error)
            await conn.execute("notify", event="finished")
            return job_from_row(row)  # type: ignore[arg-type]

        return await self._run(body)

    async def finish_cancelled(self, job_id: str, worker_id: str) -> Job:
        """The worker stopped the job because a cancel was requested."""
        return await self._finish_as(job_id, worker_id, JobStatus.CANCELLED, CANCELLED_MESSAGE)

    async def _finish_as(self, job_id: str, worker_id: str, status: JobStatus, error: str) -> Job:
        async def body(conn: Conn) -> Job:
            if await _hold(conn, job_id, worker_id, status) is None:
                return await _get(conn, job_id)
            row = await conn.fetchrow("finish", id=job_id, status=status.value, error=error)
            await conn.execute("notify", event="finished")
            return job_from_row(row)  # type: ignore[arg-type]

        return await self._run(body)

    async def worker_seen(self, worker_id: str) -> None:
        """Liveness for an idle worker (``heartbeat`` records it too)."""

        async def body(conn: Conn) -> None:
            await conn.execute("touch_worker", worker_id=worker_id)

        await self._run(body)

    async def release(self, worker_id: str, job_ids: Sequence[str] | None = None) -> list[Job]:
        """A draining worker hands jobs back: queued at once, the attempt not counted."""
        if job_ids is not None and not job_ids:
            return []
        ids = None if job_ids is None else list(job_ids)

        async def body(conn: Conn) -> list[Job]:
            rows = await conn.fetch("release", ids=ids, worker_id=worker_id, cancelled=CANCELLED_MESSAGE)
            if rows:
                await conn.execute("notify", event="queued")
            return [job_from_row(r) for r in rows]

        return await self._run(body)

    async def requeue_expired(self, max_attempts: int) -> list[Job]:
        async def body(conn: Conn) -> list[Job]:
            rows = await conn.fetch(
                "requeue_expired", max_attempts=max_attempts, dead=dead_reason(max_attempts),
                cancelled=CANCELLED_MESSAGE,
            )  # fmt: skip
            if rows:
                await conn.execute("notify", event="queued")
            return [job_from_row(r) for r in rows]

        return await self._run(body)

    # --- reading ---------------------------------------------------------------------------
    async def get_job(self, job_id: str) -> Job:
        return await self._run(partial(_get, job_id=job_id), write=False)

    async def list_jobs(
        self, *, user: str | None = None, status: JobStatus | None = None, limit: int = 50
    ) -> list[Job]:
        async def body(conn: Conn) -> list[Job]:
            rows = await conn.fetch(
                "list_jobs", user_id=user, status=status.value if status else None, limit=limit
            )
            return [job_from_row(r) for r in rows]

        return await self._run(body, write=False)

    async def artifacts(self, job_id: str) -> list[Artifact]:
        async def body(conn: Conn) -> list[Artifact]:
            return [artifact_from_row(r) for r in await conn.fetch("artifacts", job_id=job_id)]

        return await self._run(body, write=False)

    async def queue_position(self, job_id: str) -> tuple[int, int] | None:
        row = await self._one("queue_position", id=job_id)
        if row is None or not row["jobs"]:
            return None
        return int(row["jobs"]), int(row["images"])

    async def stats(self, user: str | None = None) -> QueueStats:
        async def body(conn: Conn) -> QueueStats:
            counts = await conn.fetchrow("stats", user_id=user)
            spi = await conn.fetchrow("seconds_per_image")
            workers = await conn.fetchrow("workers", active_seconds=ACTIVE_WORKER_SECONDS)
            assert counts is not None and spi is not None and workers is not None
            return QueueStats(
                queued_jobs=int(counts["queued_jobs"]),
                queued_images=int(counts["queued_images"]),
                running_jobs=int(counts["running_jobs"]),
                user_pending=int(counts["user_pending"]),
                seconds_per_image=None if spi["spi"] is None else float(spi["spi"]),
                active_workers=int(workers["active"] or 0),
                last_worker_seen=to_datetime(workers["last_seen"]),
            )

        return await self._run(body, write=False)

    # --- shared flags and admin ----------------------------------------------------------
    async def get_flag(self, name: str) -> Flag | None:
        row = await self._one("get_flag", name=name)
        if row is None:
            return None
        return Flag(name, row["value"], row["updated_by"], to_datetime(row["updated_at"]))

    async def set_flag(self, name: str, value: str | None, updated_by: str = "") -> bool:
        async def body(conn: Conn) -> bool:
            if value is None:
                return await conn.fetchrow("clear_flag", name=name) is not None
            await conn.execute("set_flag", name=name, value=value, updated_by=updated_by)
            return True

        return await self._run(body)

    async def reset_rate_limit(self, user: str) -> bool:
        async def body(conn: Conn) -> bool:
            return await conn.fetchrow("reset_bucket", user_id=user) is not None

        return await self._run(body)

    async def usage(self, seconds: float) -> list[Usage]:
        async def body(conn: Conn) -> list[Usage]:
            rows = await conn.fetch("usage", seconds=float(seconds))
            return [Usage(r["platform"], r["guild"], r["user_id"], int(r["jobs"]),
                          int(r["image_steps"])) for r in rows]  # fmt: skip

        return await self._run(body, write=False)

    # --- delivery --------------------------------------------------------------------------
    async def undelivered(self, platforms: Sequence[str], limit: int = 50) -> list[Job]:
        async def body(conn: Conn) -> list[Job]:
            rows = await conn.fetch("undelivered", platforms=list(platforms), limit=limit)
            return [job_from_row(r) for r in rows]

        return await self._run(body, write=False)

    async def mark_delivered(self, job_id: str, ref: str = "") -> bool:
        async def body(conn: Conn) -> bool:
            await _get(conn, job_id)
            return await conn.fetchrow("mark_delivered", job_id=job_id, ref=ref) is not None

        return await self._run(body)

    async def delivery_state(self, job_id: str) -> dict[str, Any]:
        row = await self._one("get_delivery_state", job_id=job_id)
        state = json.loads(row["state"]) if row is not None else {}
        return state if isinstance(state, dict) else {}

    async def set_delivery_state(self, job_id: str, state: Mapping[str, Any]) -> None:
        text = json.dumps(dict(state), sort_keys=True)
        channel, thread = state.get("channel"), state.get("thread")

        async def body(conn: Conn) -> None:
            await _get(conn, job_id)
            await conn.execute("set_delivery_state", job_id=job_id, state=text,
                               channel=str(channel) if channel else None,
                               thread=str(thread) if thread else None)  # fmt: skip

        await self._run(body)

    async def job_in_thread(self, platform: str, channel: str, thread: str) -> Job | None:
        row = await self._one("job_in_thread", platform=platform, channel=channel, thread=thread)
        return job_from_row(row) if row is not None else None


async def _get(conn: Conn, job_id: str) -> Job:
    row = await conn.fetchrow("get_job", id=job_id)
    if row is None:
        raise job_not_found(job_id)
    return job_from_row(row)


async def _hold(conn: Conn, job_id: str, worker_id: str, *done: JobStatus) -> Row | None:
    """Lock the job and return its row; None when this worker already finished it as ``done``.

    Raises ``LeaseLost`` unless the job is running for ``worker_id``: a stale worker's late
    result must neither duplicate artifacts nor resurrect a re-queued or finished job.
    """
    row = await conn.fetchrow("lock_job", id=job_id)
    if row is None:
        raise job_not_found(job_id)
    if row["worker_id"] == worker_id and row["status"] in done:
        return None
    if row["status"] != JobStatus.RUNNING or row["worker_id"] != worker_id:
        raise LeaseLost(f"job {job_id} is {row['status']} for {row['worker_id']}, not {worker_id}")
    return row


async def _upsert_artifact(conn: Conn, job_id: str, artifact: Artifact) -> None:
    await conn.execute(
        "upsert_artifact", job_id=job_id, name=artifact.name, kind=artifact.kind.value,
        mime=artifact.mime, image_index=artifact.index, data=bytes(artifact.data),
    )  # fmt: skip


async def _take_quota(conn: Conn, origin: Origin, quota: Quota) -> None:
    """Token buckets (the user's, then its group's), then the user's and the guild's pending
    caps, then the platform's share of the queue and the global cap (refusals roll back).
    Rows idle long enough to have refilled are pruned first (a bounded batch per admission),
    so no row per one-off identity lingers."""
    user = origin.user
    await conn.execute("prune_buckets", idle_seconds=quota.idle_seconds)  # before any row lock
    await conn.execute("lock_user", user_id=user)
    tokens = await _bucket(conn, user, quota.burst, quota.rate_per_second, "rate")
    group_tokens = None
    if quota.group_bucket:
        await conn.execute("lock_user", user_id=quota.group_bucket)
        group_tokens = await _bucket(conn, quota.group_bucket, quota.group_burst,
                                     quota.group_rate_per_second, "group_rate")  # fmt: skip
    counts = await conn.fetchrow(
        "pending_counts", user_id=user, guild=origin.guild, platform=origin.platform
    )
    assert counts is not None
    if int(counts["user_pending"]) >= quota.max_pending_per_user:
        raise QuotaRefused("user_pending", quota.max_pending_per_user)
    if int(counts["guild_pending"]) >= quota.max_pending_per_guild:
        raise QuotaRefused("guild_pending", quota.max_pending_per_guild)
    platform_cap = quota.max_queued_platform
    if platform_cap is not None and int(counts["platform_queued"]) >= platform_cap:
        raise QuotaRefused("platform_queue", platform_cap)
    if int(counts["queued"]) >= quota.max_queue:
        raise QuotaRefused("queue", quota.max_queue)
    await conn.execute("write_bucket", user_id=user, tokens=tokens - 1.0)
    if group_tokens is not None:
        await conn.execute("write_bucket", user_id=quota.group_bucket, tokens=group_tokens - 1.0)


async def _bucket(
    conn: Conn, key: str, burst: int, rate: float, limit: Literal["rate", "group_rate"]
) -> float:
    """The bucket's tokens now (refilled); ``QuotaRefused`` when less than one is left."""
    await conn.execute("ensure_bucket", user_id=key, tokens=float(burst))
    bucket = await conn.fetchrow("read_bucket", user_id=key)
    assert bucket is not None
    tokens = refill(float(bucket["tokens"]), float(bucket["elapsed"]), rate, burst)
    if tokens < 1.0:
        raise QuotaRefused(limit, rate * 60, retry_after=seconds_until_token(tokens, rate))
    return tokens

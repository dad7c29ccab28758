"""Whether a worker counts as running: fresh heartbeats only, and none from before a restart."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gouache import messages
from gouache.bot.generator import GeneratorWatch
from gouache.config import Settings
from gouache.storage.base import QueueStats
from gouache.web.health import Health

NOW = 1_800_000_000.0


def _stats(seen_at: float | None) -> QueueStats:
    seen = None if seen_at is None else datetime.fromtimestamp(seen_at, UTC)
    return QueueStats(queued_jobs=2, queued_images=2, running_jobs=0, user_pending=0,
                      seconds_per_image=None, active_workers=int(seen is not None),
                      last_worker_seen=seen)  # fmt: skip


def _watch(**kwargs: Any) -> GeneratorWatch:
    return GeneratorWatch(Settings(), clock=lambda: NOW, **kwargs)


def test_a_fresh_heartbeat_is_a_live_worker() -> None:
    state = _watch().judge(_stats(NOW - 5))
    assert state.live and state.heartbeat_age == 5


def test_no_heartbeat_at_all_and_a_stale_one_are_not() -> None:
    assert _watch().judge(_stats(None)).reason == "No worker has started yet."
    stale = _watch().judge(_stats(NOW - 95))
    assert not stale.live and stale.reason == "No worker heartbeat for 2 min."


def test_after_a_restart_the_previous_workers_heartbeat_is_not_live() -> None:
    # 5 s old, well inside the freshness window, but written before this service started.
    state = _watch(since=NOW - 2).judge(_stats(NOW - 5))
    assert not state.live
    assert "before the restart" in state.reason
    assert _watch(since=NOW - 2).judge(_stats(NOW - 1)).live  # our own worker's first beat


def test_the_reason_counts_worker_exits() -> None:
    state = _watch(since=NOW - 60, restarts=lambda: 4).judge(_stats(None))
    assert "exited 4 times since start-up" in state.reason


class _Storage:
    def __init__(self, stats: QueueStats) -> None:
        self._stats = stats

    async def stats(self) -> QueueStats:
        return self._stats


async def test_healthz_reports_the_previous_workers_heartbeat_as_unhealthy() -> None:
    health = Health(_Storage(_stats(NOW - 5)), Settings(), watch=_watch(since=NOW - 2))  # type: ignore[arg-type]
    healthy, details = await health.check()
    assert not healthy and details["status"] == "unhealthy"
    assert "before the restart" in details["worker"]
    assert details["worker_heartbeat_age_seconds"] == 5
    ok, fresh = await Health(_Storage(_stats(NOW - 1)), Settings(), watch=_watch()).check()  # type: ignore[arg-type]
    assert ok and fresh["worker"] == "ok"


def test_our_workers_first_start_is_starting_not_broken() -> None:
    state = _watch(since=NOW - 20).judge(_stats(NOW - 600))  # only an old run's heartbeat so far
    assert not state.live and state.starting and "starting" in state.reason
    late = _watch(since=NOW - 600).judge(_stats(None))  # ten minutes and still nothing
    assert not late.live and not late.starting
    crashed = _watch(since=NOW - 20, restarts=lambda: 1).judge(_stats(None))
    assert not crashed.starting and "exited once" in crashed.reason


def test_workers_on_demand_are_being_started_not_missing() -> None:
    """Scaled to zero by the queue (KEDA): no worker is the normal idle state, and the job
    that just arrived is what starts one, so the reply says that."""
    watch = GeneratorWatch(Settings(worker={"on_demand": True}), clock=lambda: NOW)
    for stats in (_stats(None), _stats(NOW - 3600)):
        state = watch.judge(stats)
        assert not state.live and state.starting
        assert state.reason == messages.worker_scaling_up()
    assert watch.judge(_stats(NOW - 5)).live

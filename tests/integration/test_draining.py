"""SIGTERM on a busy worker (in process, both backends): finish what fits, hand back the rest."""

from __future__ import annotations

import asyncio

from gouache.config import Settings
from gouache.storage.jobs import JobStatus
from gouache.worker.draining import drain
from gouache.worker.loop import Worker
from tests.support.engines import TimedEngine
from tests.support.factories import make_request


def _settings(tmp_path, url: str, drain_seconds: float) -> Settings:
    worker = {"lease_seconds": 30.0, "heartbeat_seconds": 0.3, "poll_seconds": 0.1,
              "progress_interval_seconds": 0.1, "drain_seconds": drain_seconds}
    return Settings(data_dir=tmp_path / "data", database_url=url, worker=worker,
                    batching={"batch_window_ms": 50})  # fmt: skip


async def _until_running(storage, ids, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        jobs = [await storage.get_job(i) for i in ids]
        if all(j.status is JobStatus.RUNNING and j.progress > 0 for j in jobs):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the jobs never ran")


async def test_lanes_that_cannot_finish_are_handed_back_at_once(storage, tmp_path, monkeypatch):
    monkeypatch.setenv("GOUACHE_TEST_BATCH_A", "4.0")  # 0.2 s a step: 60 steps take 12 s
    ids = [(await storage.enqueue(make_request(user=u, steps=60)))[0].id for u in ("ann", "bob")]
    settings = _settings(tmp_path, storage.url, drain_seconds=0.3)
    stop = asyncio.Event()
    worker = Worker(storage, TimedEngine(), settings, "leaving")
    draining = asyncio.create_task(drain(worker.run(stop), stop, storage, "leaving", 0.3))
    await _until_running(storage, ids)
    stop.set()
    assert await asyncio.wait_for(draining, 10) is True
    for job_id in ids:
        job = await storage.get_job(job_id)
        assert job.status is JobStatus.QUEUED and job.attempts == 0 and job.lease_until is None
        assert await storage.artifacts(job_id) == []
    [again, *_] = await storage.claim_batch("staying", 8, 30.0, by="shape_key")
    assert again.attempts == 1


async def test_lanes_that_fit_the_grace_period_finish_here(storage, tmp_path, monkeypatch):
    monkeypatch.setenv("GOUACHE_TEST_BATCH_A", "0.4")  # 0.02 s a step
    ids = [(await storage.enqueue(make_request(user=u, steps=20)))[0].id for u in ("ann", "bob")]
    late, _ = await storage.enqueue(make_request(user="cid", steps=20, width=96, height=96))
    settings = _settings(tmp_path, storage.url, drain_seconds=30.0)
    stop = asyncio.Event()
    worker = Worker(storage, TimedEngine(), settings, "leaving")
    draining = asyncio.create_task(drain(worker.run(stop), stop, storage, "leaving", 30.0))
    await _until_running(storage, ids)
    stop.set()
    assert await asyncio.wait_for(draining, 20) is False
    for job_id in ids:
        assert (await storage.get_job(job_id)).status is JobStatus.SUCCEEDED
    # Another shape was waiting: a stopping worker claims nothing new.
    assert (await storage.get_job(late.id)).status is JobStatus.QUEUED


async def test_an_idle_worker_stops_at_once(storage, tmp_path):
    settings = _settings(tmp_path, storage.url, drain_seconds=30.0)
    stop = asyncio.Event()
    worker = Worker(storage, TimedEngine(), settings, "idle")
    draining = asyncio.create_task(drain(worker.run(stop), stop, storage, "idle", 30.0))
    await asyncio.sleep(0.2)
    stop.set()
    assert await asyncio.wait_for(draining, 5) is False

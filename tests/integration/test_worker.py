"""The worker against real storage: batching, crashes, cancellation, sticky device errors."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gouache.config import Batching, Settings
from gouache.storage.jobs import ArtifactKind, JobStatus
from gouache.worker.loop import EXIT_DEVICE_LOST, Worker
from tests.support.engines import TimedEngine
from tests.support.factories import make_request

REPO = Path(__file__).resolve().parents[2]
FAKE_ENGINE = "tests.support.engines:TimedEngine"


def _settings(tmp_path: Path, url: str, **worker: object) -> Settings:
    cfg = {"lease_seconds": 2.0, "heartbeat_seconds": 0.3, "poll_seconds": 0.1,
           "progress_interval_seconds": 0.1, "engine": FAKE_ENGINE, **worker}
    return Settings(data_dir=tmp_path / "data", database_url=url, worker=cfg,
                    batching={"max_batch_images": 8, "batch_window_ms": 100})


async def _wait_for(predicate, timeout: float = 30.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s")


def _spawn_worker(settings: Settings, env: dict[str, str], name: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "gouache", "worker", "--worker-id", name,
           "--data-dir", str(settings.data_dir), "--database-url", settings.resolved_database_url]
    full_env = {**os.environ, **env, "PYTHONPATH": str(REPO),
                "GOUACHE_WORKER__LEASE_SECONDS": str(settings.worker.lease_seconds),
                "GOUACHE_WORKER__HEARTBEAT_SECONDS": str(settings.worker.heartbeat_seconds),
                "GOUACHE_WORKER__POLL_SECONDS": "0.1",
                "GOUACHE_WORKER__ENGINE": FAKE_ENGINE}
    return subprocess.Popen(cmd, env=full_env, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


async def _all_final(storage, ids):
    jobs = [await storage.get_job(i) for i in ids]
    return jobs if all(j.is_terminal for j in jobs) else None


async def test_compatible_jobs_from_several_users_share_one_engine_call(storage, tmp_path, monkeypatch):
    log = tmp_path / "batches.jsonl"
    monkeypatch.setenv("GOUACHE_TEST_BATCH_LOG", str(log))
    settings = _settings(tmp_path, storage.url)
    ids = []
    for user in ("ann", "bob", "cid"):
        job, _ = await storage.enqueue(make_request(user=user, count=2))
        ids.append(job.id)
    stop = asyncio.Event()
    worker = Worker(storage, TimedEngine(), settings, "w1")
    task = asyncio.create_task(worker.run(stop))
    jobs = await _wait_for(lambda: _all_final(storage, ids))
    stop.set()
    await task
    assert [j.status for j in jobs] == [JobStatus.SUCCEEDED] * 3
    batches = [json.loads(line)["items"] for line in log.read_text().splitlines()]
    assert sorted(batches[0]) == sorted(ids), batches  # one call for all three users
    for job in jobs:
        arts = await storage.artifacts(job.id)
        assert sorted(a.name for a in arts if a.kind is ArtifactKind.IMAGE) == ["image-0.png", "image-1.png"]
        assert job.progress == pytest.approx(1.0)


async def test_cancelling_a_running_job_stops_it_and_its_batch_mates_finish(storage, tmp_path, monkeypatch):
    monkeypatch.setenv("GOUACHE_TEST_BATCH_A", "2.0")
    settings = _settings(tmp_path, storage.url)
    a, _ = await storage.enqueue(make_request(user="ann", steps=20))
    b, _ = await storage.enqueue(make_request(user="bob", steps=20))
    stop = asyncio.Event()
    task = asyncio.create_task(Worker(storage, TimedEngine(), settings, "w1").run(stop))

    async def running():
        return (await storage.get_job(a.id)).status is JobStatus.RUNNING

    await _wait_for(running)
    await storage.cancel(a.id)
    jobs = await _wait_for(lambda: _all_final(storage, [a.id, b.id]))
    stop.set()
    await task
    assert jobs[0].status is JobStatus.CANCELLED
    assert jobs[1].status is JobStatus.SUCCEEDED
    assert await storage.artifacts(a.id) == []


@pytest.mark.slow
async def test_sigkilled_worker_loses_nothing_and_duplicates_nothing(storage, tmp_path):
    settings = _settings(tmp_path, storage.url)
    ids = [(await storage.enqueue(make_request(user=u, steps=20)))[0].id for u in ("ann", "bob", "cid")]
    first = _spawn_worker(settings, {"GOUACHE_TEST_BATCH_A": "6.0"}, "doomed")

    async def all_running():
        jobs = [await storage.get_job(i) for i in ids]
        return all(job.status is JobStatus.RUNNING for job in jobs)

    try:
        await _wait_for(all_running, timeout=60)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        first.kill()
    second = _spawn_worker(settings, {"GOUACHE_TEST_BATCH_A": "0.2"}, "rescuer")
    try:
        jobs = await _wait_for(lambda: _all_final(storage, ids), timeout=60)
    finally:
        second.terminate()
        second.wait(10)
    assert all(j.status is JobStatus.SUCCEEDED for j in jobs)
    assert all(j.attempts == 2 and j.worker_id == "rescuer" for j in jobs)
    for job_id in ids:
        names = [a.name for a in await storage.artifacts(job_id)]
        assert names == ["image-0.png"]  # exactly once


@pytest.mark.slow
async def test_job_that_kills_every_worker_ends_dead_after_three_attempts(storage, tmp_path):
    settings = _settings(tmp_path, storage.url)
    killer, _ = await storage.enqueue(make_request(user="mallory", prompt="kill-the-worker", steps=4))
    others = [(await storage.enqueue(make_request(user=u, steps=4)))[0].id for u in ("ann", "bob")]
    ids = [killer.id, *others]
    restarts = 0
    proc = _spawn_worker(settings, {}, f"w{restarts}")
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not await _all_final(storage, ids):
            if proc.poll() is not None:  # a supervisor restarts what died
                restarts += 1
                proc = _spawn_worker(settings, {}, f"w{restarts}")
            await asyncio.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(10)
    dead = await storage.get_job(killer.id)
    assert dead.status is JobStatus.DEAD and dead.attempts == 3, dead
    assert "3" in (dead.error or "")
    for job_id in others:
        assert (await storage.get_job(job_id)).status is JobStatus.SUCCEEDED
    assert restarts == 3


async def test_sticky_device_error_makes_the_worker_exit_for_a_restart(storage, tmp_path):
    settings = _settings(tmp_path, storage.url)
    job, _ = await storage.enqueue(make_request(prompt="sticky-cuda please"))
    proc = _spawn_worker(settings, {}, "sticky")
    try:
        code = await asyncio.to_thread(proc.wait, 60)
    finally:
        proc.kill()
    assert code == EXIT_DEVICE_LOST, proc.stderr.read() if proc.stderr else ""
    assert "sticky device error" in (proc.stderr.read() if proc.stderr else "")
    reloaded = await storage.get_job(job.id)
    assert reloaded.status is JobStatus.RUNNING and reloaded.attempts == 1  # the sweeper takes it from here


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"])  # SQLite is a file: no connection to drop
async def test_worker_rides_out_a_postgres_connection_drop(storage, storage_url, backend, tmp_path):
    import asyncpg

    settings = _settings(tmp_path, storage_url)
    ids = [(await storage.enqueue(make_request(user=f"u{i}", steps=10)))[0].id for i in range(6)]
    proc = _spawn_worker(settings, {"GOUACHE_TEST_BATCH_A": "1.0"}, "survivor")
    try:
        async def some_running():
            jobs = [await storage.get_job(i) for i in ids]
            return any(job.status is JobStatus.RUNNING for job in jobs)

        await _wait_for(some_running, timeout=60)
        admin = await asyncpg.connect(storage_url)
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()
        assert killed >= 1
        late, _ = await storage.enqueue(make_request(user="late", steps=10))
        jobs = await _wait_for(lambda: _all_final(storage, [*ids, late.id]), timeout=60)
        assert proc.poll() is None, "the worker must carry on, not die"
    finally:
        proc.terminate()
        proc.wait(10)
    assert all(job.status is JobStatus.SUCCEEDED for job in jobs)
    for job_id in ids:
        assert [a.name for a in await storage.artifacts(job_id)] == ["image-0.png"]


@pytest.mark.parametrize("backend", ["sqlite"])  # the queue part is covered on both above
@pytest.mark.parametrize("enlarge", ["", "interval"])
async def test_diversity_job_through_the_real_engine_gets_a_report(storage, backend, tmp_path, enlarge):
    import io

    from PIL import Image

    from gouache.generation.diversity.scorer import DiversityScorer
    from gouache.generation.loop.engine import Engine
    from gouache.generation.models import ModelRegistry
    from gouache.request import Kind

    settings = _settings(tmp_path, storage.url)
    registry = ModelRegistry(settings.models, cache_dir=tmp_path / "models", device="cpu")
    job, _ = await storage.enqueue(make_request(kind=Kind.DIVERSITY, count=3, steps=3, diversify=not enlarge,
                                                enlarge=enlarge))
    stop = asyncio.Event()
    worker = Worker(storage, Engine(registry), settings, "w1", DiversityScorer(registry))
    task = asyncio.create_task(worker.run(stop))
    [done] = await _wait_for(lambda: _all_final(storage, [job.id]), timeout=120)
    stop.set()
    await task
    assert done.status is JobStatus.SUCCEEDED, done.error
    arts = {a.name: a for a in await storage.artifacts(job.id)}
    assert {"image-0.png", "image-1.png", "image-2.png", "report.json", "report.png"} <= set(arts)
    report = json.loads(arts["report.json"].data)
    assert report["images"] == 3 and len(report["clip_scores"]) == 3
    # The stored figures are the figures of the stored images (not just within 1..n).
    images = [Image.open(io.BytesIO(arts[f"image-{i}.png"].data)).convert("RGB") for i in range(3)]
    again = DiversityScorer(registry).report(job.request.model, job.request.prompt, images)
    assert report["semantic_vendi"] == pytest.approx(again.semantic_vendi, abs=1e-3)
    assert report["style_vendi"] == pytest.approx(again.style_vendi, abs=1e-3)
    assert arts["report.json"].kind is ArtifactKind.REPORT
    assert arts["report.png"].kind is ArtifactKind.COMPOSITE and arts["report.png"].data[:4] == b"\x89PNG"
    assert ("baseline" in report) == bool(enlarge) and ("->" in report["summary"]) == bool(enlarge)


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("flag_everything", [True, False])
async def test_safety_classifier_verdicts_are_recorded_and_applied(storage, backend, tmp_path, flag_everything):
    from gouache.bot.moderation import screen
    from gouache.generation.safety import SafetyClassifier
    from tests.support.safety import build_classifier

    settings = _settings(tmp_path, storage.url)
    safety = SafetyClassifier(str(build_classifier(tmp_path / "clf", flag_everything=flag_everything)))
    job, _ = await storage.enqueue(make_request(count=2, gif=True))
    stop = asyncio.Event()
    task = asyncio.create_task(Worker(storage, TimedEngine(), settings, "w1", safety=safety).run(stop))
    [done] = await _wait_for(lambda: _all_final(storage, [job.id]))
    stop.set()
    await task
    assert done.status is JobStatus.SUCCEEDED
    artifacts = await storage.artifacts(job.id)
    [record] = [a for a in artifacts if a.kind is ArtifactKind.MODERATION]
    flagged = json.loads(record.data)["flagged"]
    everything = ["denoise-0.gif", "denoise-1.gif", "image-0.png", "image-1.png"]
    assert flagged == (everything if flag_everything else [])
    withheld = screen(artifacts, "withhold", can_hide=True)
    assert withheld.withheld == (4 if flag_everything else 0)
    assert sorted(a.name for a in withheld.artifacts) == ([] if flag_everything else everything)


# --- step-level batching (the default): jobs join and leave a running batch ----------------


async def test_a_short_job_joins_a_running_batch_and_leaves_before_the_long_one(storage, tmp_path, monkeypatch):
    """The newcomer shares the long job's UNet calls from the next step on and is done first."""
    log = tmp_path / "steps.jsonl"
    monkeypatch.setenv("GOUACHE_TEST_BATCH_LOG", str(log))
    monkeypatch.setenv("GOUACHE_TEST_BATCH_A", "2.0")  # 0.1 s a step
    settings = _settings(tmp_path, storage.url)
    long, _ = await storage.enqueue(make_request(user="ann", steps=40, sampler="ddim", guidance=7.5))
    stop = asyncio.Event()
    task = asyncio.create_task(Worker(storage, TimedEngine(), settings, "w1").run(stop))

    async def long_has_progress():
        return (await storage.get_job(long.id)).progress > 0.1

    await _wait_for(long_has_progress)
    short, _ = await storage.enqueue(make_request(user="bob", steps=4, sampler="euler", guidance=1.0))
    done = await _wait_for(lambda: _all_final(storage, [short.id]))
    still = await storage.get_job(long.id)
    stop.set()
    await task
    assert done[0].status is JobStatus.SUCCEEDED
    assert still.status is JobStatus.RUNNING, "the short job waited for the long batch"
    steps = [json.loads(line)["items"] for line in log.read_text().splitlines()]
    shared = [s for s in steps if short.id in s]
    assert len(shared) == 4 and all(long.id in s for s in shared)  # one call, both lanes
    assert (await storage.get_job(long.id)).status is JobStatus.SUCCEEDED  # SIGTERM: it finished


async def test_request_mode_is_kept_for_comparison(storage, tmp_path, monkeypatch):
    log = tmp_path / "batches.jsonl"
    monkeypatch.setenv("GOUACHE_TEST_BATCH_LOG", str(log))
    settings = _settings(tmp_path, storage.url).model_copy(
        update={"batching": Batching(mode="request", max_batch_images=8, batch_window_ms=100)})
    a, _ = await storage.enqueue(make_request(user="ann", steps=4))
    b, _ = await storage.enqueue(make_request(user="bob", steps=6))  # another key: another call
    stop = asyncio.Event()
    task = asyncio.create_task(Worker(storage, TimedEngine(), settings, "w1").run(stop))
    jobs = await _wait_for(lambda: _all_final(storage, [a.id, b.id]))
    stop.set()
    await task
    assert all(j.status is JobStatus.SUCCEEDED for j in jobs)
    steps = [json.loads(line)["items"] for line in log.read_text().splitlines()]
    # Each claim is one running batch that nothing joins: a's 4 steps and b's 6, never together.
    assert sorted(map(tuple, steps)) == sorted([(a.id,)] * 4 + [(b.id,)] * 6)


async def test_sigkill_with_jobs_that_joined_mid_batch_loses_and_duplicates_nothing(storage, tmp_path):
    settings = _settings(tmp_path, storage.url)
    first_ids = [(await storage.enqueue(make_request(user="ann", steps=30)))[0].id]
    worker = _spawn_worker(settings, {"GOUACHE_TEST_BATCH_A": "6.0"}, "doomed")
    joined = []
    try:
        await _wait_for(lambda: _running(storage, first_ids), timeout=60)
        for user, steps in (("bob", 5), ("cid", 12)):  # different steps: they join the lanes
            joined.append((await storage.enqueue(make_request(user=user, steps=steps)))[0].id)
        await _wait_for(lambda: _running(storage, joined), timeout=60)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        worker.kill()
    ids = first_ids + joined
    rescuer = _spawn_worker(settings, {"GOUACHE_TEST_BATCH_A": "0.2"}, "rescuer")
    try:
        jobs = await _wait_for(lambda: _all_final(storage, ids), timeout=60)
    finally:
        rescuer.terminate()
        rescuer.wait(10)
    assert all(j.status is JobStatus.SUCCEEDED and j.attempts == 2 for j in jobs), jobs
    for job_id in ids:
        assert [a.name for a in await storage.artifacts(job_id)] == ["image-0.png"]


async def _running(storage, ids):
    jobs = [await storage.get_job(i) for i in ids]
    return all(job.status is JobStatus.RUNNING for job in jobs)

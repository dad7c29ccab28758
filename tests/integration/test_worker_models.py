"""A model that cannot load fails its jobs, never the worker; a bad default is reported."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from gouache.config import Settings
from gouache.storage.jobs import JobStatus
from gouache.worker.loop import Worker
from tests.support.factories import make_request


def _settings(tmp_path: Path, url: str, default_model: str = "builtin:tiny") -> Settings:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    return Settings(
        data_dir=tmp_path / "data", database_url=url, default_model=default_model,
        models={"broken": {"path": str(broken)}, "gone": {"path": str(tmp_path / "no-such-folder")}},
        worker={"lease_seconds": 5.0, "heartbeat_seconds": 0.3, "poll_seconds": 0.1,
                "progress_interval_seconds": 0.1, "device": "cpu"},
        batching={"batch_window_ms": 50},
    )  # fmt: skip


async def _final(storage, ids, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = [await storage.get_job(i) for i in ids]
        if all(j.is_terminal for j in jobs):
            return jobs
        await asyncio.sleep(0.1)
    raise AssertionError("jobs did not finish")


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("mode", ["step", "request"])
async def test_a_model_that_cannot_load_fails_its_jobs_and_the_worker_serves_the_others(
    storage, backend, tmp_path, mode
):
    from gouache.generation.loop.engine import Engine
    from gouache.worker.loading import build_registry

    settings = _settings(tmp_path, storage.url)
    settings.batching.mode = mode  # type: ignore[assignment]
    engine = Engine(build_registry(settings))
    ids = []
    for model in ("broken", "gone", "builtin:tiny"):
        job, _ = await storage.enqueue(make_request(model=model, steps=2))
        ids.append(job.id)
    stop = asyncio.Event()
    task = asyncio.create_task(Worker(storage, engine, settings, "w1").run(stop))
    broken, gone, tiny = await _final(storage, ids)
    assert not task.done()  # still serving
    stop.set()
    await task
    assert broken.status is JobStatus.FAILED and "'broken' could not be loaded (wrong format)" in broken.error
    assert gone.status is JobStatus.FAILED and "'gone' could not be loaded (missing file)" in gone.error
    assert tiny.status is JobStatus.SUCCEEDED, tiny.error


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_bad_default_model_is_reported_at_start_up_and_the_worker_starts(backend, tmp_path, caplog):
    from gouache.worker.loading import load_generation

    settings = _settings(tmp_path, f"sqlite:///{tmp_path / 'q.db'}", default_model="broken")
    with caplog.at_level(logging.ERROR, logger="gouache.worker.loading"):
        engine, _scorer, _safety = load_generation(settings)
    assert "default model broken is not usable" in caplog.text and "wrong format" in caplog.text
    assert engine.model("builtin:tiny").name == "builtin:tiny"

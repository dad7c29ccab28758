"""Sweeps, --process and /interpolate through the real worker loop, engine and storage."""

from __future__ import annotations

import asyncio
import io
import time

import pytest
from PIL import Image

from gouache.config import Settings
from gouache.generation.loop.engine import Engine
from gouache.generation.models import ModelRegistry
from gouache.request import Kind
from gouache.storage.jobs import JobStatus
from gouache.worker.loop import Worker
from tests.support.factories import make_request


@pytest.mark.parametrize("backend", ["sqlite"])  # the queue part is covered on both elsewhere
async def test_a_sweep_a_process_and_an_interpolation_through_the_worker(storage, backend, tmp_path):
    settings = Settings(data_dir=tmp_path / "data", database_url=storage.url,
                        worker={"lease_seconds": 5.0, "heartbeat_seconds": 0.3, "poll_seconds": 0.1},
                        batching={"max_batch_images": 8, "batch_window_ms": 50})  # fmt: skip
    registry = ModelRegistry(settings.models, cache_dir=tmp_path / "models", device="cpu")
    sweep = make_request(steps=2, sweep=(("cfg", ("3", "7")), ("seed", ("1", "2", "3"))))
    jobs = [
        (await storage.enqueue(sweep))[0],
        (await storage.enqueue(make_request(steps=3, process=True)))[0],
        (await storage.enqueue(make_request(kind=Kind.INTERPOLATE, prompt="a red fox",
                                            prompt_b="a blue whale", seed_b=99, frames=3, steps=2)))[0],
        (await storage.enqueue(make_request(steps=2)))[0],  # an ordinary job beside them
    ]  # fmt: skip
    assert jobs[0].images == 6 and jobs[2].images == 3
    stop = asyncio.Event()
    worker = Worker(storage, Engine(registry), settings, "w1")
    task = asyncio.create_task(worker.run(stop))
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        done = [await storage.get_job(j.id) for j in jobs]
        if all(j.is_terminal for j in done):
            break
        await asyncio.sleep(0.2)
    stop.set()
    await task
    assert [j.status for j in done] == [JobStatus.SUCCEEDED] * 4, [j.error for j in done]
    # The sweep ran whole; --process, the interpolation's frames and the plain job shared a batch.
    assert worker.batches == 2
    names = [[a.name for a in await storage.artifacts(j.id)] for j in jobs]
    assert names[0] == ["grid.png", *(f"image-{k}.png" for k in range(6))]  # the grid is posted first
    assert set(names[1]) == {"image-0.png", "process.gif", "process-strip.png"}
    assert set(names[2]) == {"interpolation.gif", "strip.png", "image-0.png", "image-2.png"}
    assert names[3] == ["image-0.png"]
    grid = next(a for a in await storage.artifacts(jobs[0].id) if a.name == "grid.png")
    assert Image.open(io.BytesIO(grid.data)).width >= 2 * 128
    assert next(a for a in await storage.artifacts(jobs[0].id) if a.name == "grid.png").index is None


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_cancelling_an_interpolation_stops_every_frame_and_its_batch_mate_finishes(storage, backend,
                                                                                         tmp_path):  # fmt: skip
    settings = Settings(data_dir=tmp_path / "data", database_url=storage.url,
                        worker={"lease_seconds": 5.0, "heartbeat_seconds": 0.2, "poll_seconds": 0.1,
                                "progress_interval_seconds": 0.1},
                        batching={"max_batch_images": 8, "batch_window_ms": 200})  # fmt: skip
    registry = ModelRegistry(settings.models, cache_dir=tmp_path / "models", device="cpu")
    frames, _ = await storage.enqueue(make_request(kind=Kind.INTERPOLATE, prompt="a red fox", user="ann",
                                                   prompt_b="a blue whale", frames=4, steps=400))  # fmt: skip
    plain, _ = await storage.enqueue(make_request(user="bob", steps=3))
    stop = asyncio.Event()
    task = asyncio.create_task(Worker(storage, Engine(registry), settings, "w1").run(stop))
    deadline = time.monotonic() + 120
    while (await storage.get_job(frames.id)).progress <= 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await storage.cancel(frames.id)
    while time.monotonic() < deadline:
        done = [await storage.get_job(j.id) for j in (frames, plain)]
        if all(j.is_terminal for j in done):
            break
        await asyncio.sleep(0.1)
    stop.set()
    await task
    assert [j.status for j in done] == [JobStatus.CANCELLED, JobStatus.SUCCEEDED], [j.error for j in done]
    assert await storage.artifacts(frames.id) == []

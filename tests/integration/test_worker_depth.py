"""The worker with /depth jobs against real storage: a good map yields the depth map used as one
artifact per job (``--n 2`` and a ``--sweep`` alike: the images all followed the one input); a
hostile upload that slipped past admission fails its job alone, with its message, and its
batch-mates succeed (no stuck job)."""

from __future__ import annotations

import asyncio
import io
import time

import numpy as np
from PIL import Image

from gouache.config import Settings
from gouache.request import Kind
from gouache.storage.jobs import Artifact, ArtifactKind, JobStatus
from gouache.worker.loop import Worker
from tests.support.engines import TimedEngine
from tests.support.factories import make_request


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


async def test_depth_jobs_store_the_map_used_and_bad_uploads_fail_alone(storage, tmp_path) -> None:  # noqa: ANN001
    settings = Settings(
        data_dir=tmp_path / "data", database_url=storage.url,
        worker={"lease_seconds": 2.0, "heartbeat_seconds": 0.3, "poll_seconds": 0.1,
                "progress_interval_seconds": 0.1, "engine": "tests.support.engines:TimedEngine"},
        batching={"max_batch_images": 8, "batch_window_ms": 100},
    )  # fmt: skip
    ramp = Image.fromarray(np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[:, None], (1, 64)))
    uploads = {"good": _png(ramp), "html": b"<!DOCTYPE html><html></html>",
               "flat": _png(Image.new("L", (64, 64), 90))}  # fmt: skip
    ids = {}
    for name, data in uploads.items():
        request = make_request(user=name, kind=Kind.DEPTH, count=2, attachment="input-0.png")
        job, _ = await storage.enqueue(request, [Artifact("", "input-0.png", ArtifactKind.INPUT, "image/png", data)])
        ids[name] = job.id
    sweep = make_request(user="sweep", kind=Kind.DEPTH, attachment="input-0.png",
                         sweep=(("strength", ("0.5", "1")),))  # fmt: skip
    job, _ = await storage.enqueue(sweep, [Artifact("", "input-0.png", ArtifactKind.INPUT, "image/png", uploads["good"])])
    ids["sweep"] = job.id
    stop = asyncio.Event()
    task = asyncio.create_task(Worker(storage, TimedEngine(), settings, "w1").run(stop))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        jobs = {n: await storage.get_job(i) for n, i in ids.items()}
        if all(j.is_terminal for j in jobs.values()):
            break
        await asyncio.sleep(0.1)
    stop.set()
    await task
    assert jobs["good"].status is JobStatus.SUCCEEDED
    assert jobs["sweep"].status is JobStatus.SUCCEEDED, jobs["sweep"].error
    assert jobs["html"].status is JobStatus.FAILED and "web page (HTML)" in (jobs["html"].error or "")
    assert jobs["flat"].status is JobStatus.FAILED and "one flat value" in (jobs["flat"].error or "")
    for name, images in (("good", ["image-0.png", "image-1.png"]),
                         ("sweep", ["grid.png", "image-0.png", "image-1.png"])):  # fmt: skip
        stored = [a for a in await storage.artifacts(ids[name]) if a.kind is not ArtifactKind.INPUT]
        assert sorted(a.name for a in stored if a.kind is ArtifactKind.IMAGE) == images, name
        [depth] = [a for a in stored if a.kind is ArtifactKind.DEPTH]  # once, whatever the image count
        assert (depth.name, depth.index) == ("depth.png", None), name
        used = np.asarray(Image.open(io.BytesIO(depth.data)))
        assert used.shape == (64, 64) and used[0, 0] < 10 and used[-1, 0] > 245, name

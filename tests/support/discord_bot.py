"""The real discord.py client (``DiscordAdapter``) against ``FakeDiscord``, for integration tests."""

from __future__ import annotations

import asyncio
import io
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from gouache.bot.adapters.discord.client import DiscordAdapter
from gouache.bot.delivery import Delivery
from gouache.config import Admission as AdmissionSettings
from gouache.config import DiscordSettings, Limits, Settings
from gouache.storage import Artifact, ArtifactKind, Job, JobStatus, Storage, open_storage
from tests.fakes.fake_discord import Call, FakeDiscord
from tests.support.adapters import adapter_deps, no_links

__all__ = ["Bot", "NO_MENTIONS", "png", "noise_png", "gif", "make_settings", "start_client",
           "running_bot", "original_edits", "wait_edits", "LINK"]  # fmt: skip

NO_MENTIONS = {"parse": []}
LINK = "https://gouache.test/files/{job}/{name}?sig=s"


def png(color: str = "red", size: int = 16) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, "PNG")
    return out.getvalue()


def noise_png(size: int = 96, seed: int = 0) -> bytes:
    """An incompressible PNG: WebP and JPEG re-encodings come out much smaller."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def gif(frames: int = 8, size: int = 48) -> bytes:
    rng = random.Random(frames)
    images = [Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3))
              for _ in range(frames)]  # fmt: skip
    out = io.BytesIO()
    images[0].save(out, "GIF", save_all=True, append_images=images[1:], duration=100, loop=0)
    return out.getvalue()


@dataclass
class Bot:
    client: DiscordAdapter
    storage: Storage
    settings: Settings
    fake: FakeDiscord

    async def jobs(self) -> list[Job]:
        return await self.storage.list_jobs(limit=100)

    async def finish(
        self, job: Job, *, gif: bool = False, images: Sequence[bytes] | None = None,
        gifs: Sequence[bytes] = (),
    ) -> Job:  # fmt: skip
        """Play the worker: claim the job and complete it with images (and GIFs)."""
        if (await self.storage.get_job(job.id)).status is not JobStatus.RUNNING:
            claimed = await self.storage.claim_batch("worker-1", 64, 60.0)
            assert job.id in [j.id for j in claimed]
        artifacts = [Artifact(job.id, f"image-{i}.png", ArtifactKind.IMAGE, "image/png", data, i)
                     for i, data in enumerate(images or [png()])]  # fmt: skip
        if gif and not gifs:
            gifs = [b"GIF89a" * 50]
        artifacts += [Artifact(job.id, f"denoise-{i}.gif", ArtifactKind.GIF, "image/gif", data, i)
                      for i, data in enumerate(gifs)]  # fmt: skip
        return await self.storage.complete(job.id, "worker-1", artifacts)

    async def deliver(self) -> int:
        return await Delivery(self.storage, {"discord": self.client}).deliver_pending()

    async def command(self, name: str, options: dict[str, Any], **kw: Any) -> tuple[dict, list[Call]]:
        """Run a slash command; returns its payload and the edits of its deferred response."""
        payload = await self.fake.slash_command(name, options, **kw)
        return payload, await wait_edits(self.fake, payload["token"])


def make_settings(tmp_path: Path, fake: FakeDiscord, **changes: Any) -> Settings:
    """Settings for a bot talking to ``fake``; ``changes`` replace whole sections."""
    fields: dict[str, Any] = dict(
        data_dir=tmp_path / "data",
        discord=DiscordSettings(
            token="fake-token", application_id=fake.application_id, api_base=fake.api_base
        ),
        admission=AdmissionSettings(rate_per_minute=600, burst=50, max_pending_per_user=50),
        limits=Limits(max_images=16),
    )  # fmt: skip
    return Settings(**{**fields, **changes})


def _link(job_id: str, name: str) -> str | None:
    return LINK.format(job=job_id, name=name)


async def start_client(
    settings: Settings, storage: Storage, *, links: bool = True, **options: Any
) -> tuple[DiscordAdapter, asyncio.Task]:
    client = DiscordAdapter(
        adapter_deps(settings, storage, artifact_url=_link if links else no_links),
        guild_ready_timeout=0.01, **options,
    )  # fmt: skip
    task = asyncio.create_task(client.start())
    ready = asyncio.create_task(client.wait_until_ready())
    await asyncio.wait([task, ready], timeout=15, return_when=asyncio.FIRST_COMPLETED)
    if task.done():  # start-up failed: show why instead of timing out
        ready.cancel()
        await task
    assert ready.done(), "the client never became ready"
    return client, task


@asynccontextmanager
async def running_bot(
    fake: FakeDiscord, tmp_path: Path, storage: Storage | None = None, *, links: bool = True,
    **changes: Any,
) -> AsyncIterator[Bot]:  # fmt: skip
    settings = make_settings(tmp_path, fake, **changes)
    async with _storage(tmp_path, storage) as opened:
        client, task = await start_client(settings, opened, links=links)
        try:
            yield Bot(client, opened, settings, fake)
        finally:
            await client.close()
            await asyncio.wait_for(task, 10)


@asynccontextmanager
async def _storage(tmp_path: Path, given: Storage | None) -> AsyncIterator[Storage]:
    if given is not None:
        yield given
        return
    async with open_storage(f"sqlite:///{tmp_path / 'queue.db'}") as storage:
        yield storage


def original_edits(fake: FakeDiscord, token: str) -> list[Call]:
    return fake.find("PATCH", f"/webhooks/{fake.application_id}/{token}/messages/@original")


async def wait_edits(fake: FakeDiscord, token: str, count: int = 1) -> list[Call]:
    await fake.wait_for(lambda f: len(original_edits(f, token)) >= count)
    return original_edits(fake, token)

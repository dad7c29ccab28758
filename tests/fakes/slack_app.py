"""The real ``SlackAdapter`` wired to the fakes, over signed HTTP or Socket Mode, for tests.

``async with slack_app(storage, tmp_path, mode="socket") as app:`` gives the adapter, the fake
Web API, the sender that plays Slack (``app.slack``: commands, mentions, presses, modal
submissions, shortcuts) and helpers to finish and deliver jobs the way the worker would.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from PIL import Image

from gouache.bot.adapters.slack.app import SLACK_PATH, SlackAdapter, open_adapter
from gouache.bot.delivery import Delivery
from gouache.config import Admission as AdmissionSettings
from gouache.config import Limits, Settings, SlackSettings
from gouache.storage import Artifact, ArtifactKind, Job, Storage
from tests.fakes.fake_slack import FakeSlack, Payloads, SlackSender
from tests.fakes.fake_slack_socket import FakeSlackSocket, SocketSender
from tests.support.adapters import adapter_deps

__all__ = ["SlackApp", "slack_app", "png", "SECRET"]

SECRET = "signing-secret-for-tests"


def png(color: str = "red", size: int = 16) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, "PNG")
    return out.getvalue()


@dataclass
class SlackApp:
    adapter: SlackAdapter
    storage: Storage
    fake: FakeSlack
    slack: Payloads
    settings: Settings
    socket: FakeSlackSocket | None = None

    async def jobs(self) -> list[Job]:
        return await self.storage.list_jobs(limit=100)

    async def replies(self, count: int = 1) -> list[dict[str, Any]]:
        await self.fake.wait_for(lambda f: len(f.find("response")) >= count)
        return [c.args for c in self.fake.find("response")]

    async def wait_jobs(self, count: int = 1, timeout: float = 30.0) -> list[Job]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            jobs = await self.jobs()
            if len(jobs) >= count:
                return jobs
            await asyncio.sleep(0.05)
        raise AssertionError(f"expected {count} jobs, have {len(await self.jobs())}")

    async def finish(self, job: Job, artifacts: Sequence[Artifact] | None = None) -> Job:
        await self.storage.claim_batch("worker-1", 8, 60.0)
        if artifacts is None:
            artifacts = [Artifact(job.id, "image-0.png", ArtifactKind.IMAGE, "image/png", png(),
                                  index=0)]  # fmt: skip
        return await self.storage.complete(job.id, "worker-1", list(artifacts))

    async def deliver(self, **options: Any) -> int:
        return await Delivery(self.storage, {"slack": self.adapter}, **options).deliver_pending()


@asynccontextmanager
async def slack_app(
    storage: Storage, tmp_path: Path, *, mode: str = "http", limits: Limits | None = None,
    config: dict[str, Any] | None = None, **slack: Any,
) -> AsyncIterator[SlackApp]:  # fmt: skip
    """The adapter as ``service.py`` opens it, in ``mode`` ("http" or "socket"); ``config``
    adds settings (models, loras_dir, styles, ...)."""
    async with AsyncExitStack() as stack:
        fake = await stack.enter_async_context(FakeSlack())
        tokens: dict[str, Any] = {"bot_token": fake.bot_token, "api_base": fake.api_base}
        if mode == "socket":
            socket = await stack.enter_async_context(FakeSlackSocket(fake))
            tokens["app_token"] = fake.app_token
        else:
            tokens["signing_secret"] = SECRET
        settings = Settings(
            data_dir=tmp_path / "data",
            slack=SlackSettings(**(tokens | slack)),
            admission=AdmissionSettings(rate_per_minute=600, burst=50, max_pending_per_user=50),
            limits=limits or Limits(),
            **(config or {}),
        )
        adapter = await open_adapter(adapter_deps(settings, storage), stack)
        if mode == "socket":
            await socket.wait_connected()
            yield SlackApp(adapter, storage, fake, SocketSender(socket, fake), settings, socket)
            return
        web_app = web.Application()
        web_app.add_routes(adapter.routes())
        runner = web.AppRunner(web_app, access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        sender = SlackSender(f"http://127.0.0.1:{port}{SLACK_PATH}", SECRET, fake)
        yield SlackApp(adapter, storage, fake, sender, settings)

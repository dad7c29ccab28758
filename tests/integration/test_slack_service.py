"""``gouache run`` with only Slack's bot and app-level tokens: Socket Mode, end to end.

The composition root opens the real adapter, which dials the fake Socket Mode server (no
signing secret, no Slack route on the web server); a command sent as an envelope is queued,
and the service's own delivery loop posts the finished job into the job's thread.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
import pytest

from gouache.config import Admission as AdmissionSettings
from gouache.config import Settings, SlackSettings
from gouache.service import serve
from gouache.storage import Artifact, ArtifactKind, open_storage
from tests.fakes.fake_slack import FakeSlack
from tests.fakes.fake_slack_socket import FakeSlackSocket, SocketSender
from tests.fakes.slack_app import png


async def test_socket_mode_service_needs_no_signing_secret_or_route(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gouache.service")
    async with FakeSlack() as fake, FakeSlackSocket(fake) as socket:
        settings = Settings(
            data_dir=tmp_path / "data", port=0,
            slack=SlackSettings(bot_token=fake.bot_token, app_token=fake.app_token,
                                api_base=fake.api_base),
            admission=AdmissionSettings(rate_per_minute=600, burst=50),
        )  # fmt: skip
        stop = asyncio.Event()
        service = asyncio.create_task(serve(settings, stop=stop, spawn_worker=False))
        try:
            await socket.wait_connected(timeout=60)
            lines = [r.getMessage() for r in caplog.records if r.name == "gouache.service"]
            assert any(line.startswith("Slack: enabled in Socket Mode") and "no public URL" in line
                       for line in lines), lines  # fmt: skip
            slack = SocketSender(socket, fake)
            await slack.command("/imagine", "a cube")
            assert slack.last is not None and (slack.last.ack_seconds or 9) < 3.0
            await fake.wait_for(lambda f: f.find("response"))
            async with open_storage(settings.resolved_database_url) as storage:
                [job] = await storage.list_jobs()
                await storage.claim_batch("w", 1, 60.0)
                image = Artifact(job.id, "image-0.png", ArtifactKind.IMAGE, "image/png", png(), 0)
                await storage.complete(job.id, "w", [image])
            await fake.wait_for(lambda f: f.find("files.completeUploadExternal"), timeout=15)
            [root] = fake.find("chat.postMessage")
            [complete] = fake.find("files.completeUploadExternal")
            assert complete.args["thread_ts"] == root.extra["response"]["ts"]
            assert [u.data for u in fake.find("upload")] == [png()]
            port = next(int(line.rsplit(":", 1)[1].split("/")[0]) for line in lines
                        if line.startswith("web playground"))  # fmt: skip
            async with aiohttp.ClientSession() as session, session.post(
                f"http://127.0.0.1:{port}/slack/events", data=b"{}"
            ) as resp:  # fmt: skip
                assert resp.status == 404  # no Slack endpoint in Socket Mode
        finally:
            stop.set()
            assert await asyncio.wait_for(service, 30) == 0

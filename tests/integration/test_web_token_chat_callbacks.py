"""With a web token set (required off loopback), Slack's signed callbacks still get in.

Found by the chaos run (benchmarks/chaos.py): the token middleware guarded every path but
/healthz and signed links, so with ``GOUACHE_WEB__TOKEN`` set every Slack request was answered
401 — Slack cannot send our token, it signs its requests instead. Routes a chat adapter adds
check their platform's signature; the token check leaves them to it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from gouache.bot.adapters.slack.app import SLACK_PATH, SlackAdapter
from gouache.bot.adapters.web import WebAdapter
from gouache.bot.links import ArtifactLinks, load_link_key
from gouache.config import Settings
from gouache.observability import Metrics
from gouache.storage import open_storage
from gouache.web.app import AppDeps, make_app
from gouache.web.health import Health
from gouache.web.metrics import QueueMetrics
from tests.fakes.fake_slack import FakeSlack, SlackSender
from tests.support.adapters import adapter_deps

SECRET = "signing-secret-for-the-test"


async def test_signed_slack_requests_pass_the_web_token_check(tmp_path: Path) -> None:
    async with FakeSlack() as fake, open_storage(f"sqlite:///{tmp_path / 'q.db'}") as storage:
        settings = Settings(
            data_dir=tmp_path, host="0.0.0.0", web={"token": "web-token-1234"},
            slack={"bot_token": fake.bot_token, "signing_secret": SECRET, "api_base": fake.api_base},
        )  # fmt: skip
        deps = adapter_deps(settings, storage)
        slack = SlackAdapter(deps)
        web_adapter = WebAdapter(deps, ArtifactLinks(None, load_link_key(tmp_path)))
        app = make_app(AppDeps(settings, web_adapter, Health(storage, settings),
                               QueueMetrics(storage, Metrics(CollectorRegistry())),
                               extra_routes=slack.routes()))  # fmt: skip
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            sender = SlackSender(str(client.make_url(SLACK_PATH)), SECRET, fake)
            sent = await sender.command("/imagine", "a red cube")
            assert sent["status"] == 200, sent["reply"]
            [job] = await _jobs_once_queued(storage)
            assert job.request.origin.request_id == sent["trigger_id"]

            forged = SlackSender(str(client.make_url(SLACK_PATH)), "not-the-secret", fake)
            assert (await forged.command("/imagine", "a blue cube"))["status"] == 401
            assert len(await storage.list_jobs()) == 1
            assert (await client.get("/api/jobs")).status == 401  # the API still needs the token
        finally:
            await client.close()


async def _jobs_once_queued(storage, timeout: float = 10.0) -> list:
    """The jobs, once the command's job is in: Slack is answered first, the job enqueued after."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (jobs := await storage.list_jobs()) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    return jobs

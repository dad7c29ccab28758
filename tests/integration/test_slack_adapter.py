"""The real slack-bolt app and slack_sdk client against the local fake Slack."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from PIL import Image

from gouache.bot.adapters.slack.app import SLACK_PATH, SlackAdapter, slack_routes
from gouache.bot.delivery import Delivery
from gouache.config import Admission as AdmissionSettings
from gouache.config import Settings, SlackSettings
from gouache.storage import Artifact, ArtifactKind, Job, Storage, open_storage
from tests.fakes.fake_slack import FakeSlack, SlackSender
from tests.support.adapters import adapter_deps

SECRET = "signing-secret-for-tests"


def png(color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(out, "PNG")
    return out.getvalue()


@dataclass
class App:
    adapter: SlackAdapter
    storage: Storage
    fake: FakeSlack
    slack: SlackSender

    async def jobs(self) -> list[Job]:
        return await self.storage.list_jobs(limit=100)

    async def replies(self, count: int = 1) -> list[dict]:
        await self.fake.wait_for(lambda f: len(f.find("response")) >= count)
        return [c.args for c in self.fake.find("response")]

    async def finish(self, job: Job) -> None:
        await self.storage.claim_batch("worker-1", 8, 60.0)
        image = Artifact(job.id, "image-0.png", ArtifactKind.IMAGE, "image/png", png())
        await self.storage.complete(job.id, "worker-1", [image])

    async def deliver(self) -> int:
        return await Delivery(self.storage, {"slack": self.adapter}).deliver_pending()


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    async with FakeSlack() as fake, open_storage(f"sqlite:///{tmp_path / 'q.db'}") as storage:
        settings = Settings(
            data_dir=tmp_path / "data",
            slack=SlackSettings(
                bot_token=fake.bot_token, signing_secret=SECRET, api_base=fake.api_base
            ),  # fmt: skip
            admission=AdmissionSettings(rate_per_minute=600, burst=50),
        )
        adapter = SlackAdapter(adapter_deps(settings, storage))
        web_app = web.Application()
        web_app.add_routes(slack_routes(adapter))
        runner = web.AppRunner(web_app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        sender = SlackSender(f"http://127.0.0.1:{port}{SLACK_PATH}", SECRET, fake)
        try:
            yield App(adapter, storage, fake, sender)
        finally:
            await runner.cleanup()
            await adapter.close()


async def test_slash_command_becomes_one_job_even_when_retried(app: App) -> None:
    sent = await app.slack.command("/imagine", "a red cube --steps 5 --ar 16:9")
    assert sent["status"] == "200"
    [reply] = await app.replies()
    assert reply["response_type"] == "ephemeral" and reply["text"].startswith("Queued: next")
    await app.slack.command("/imagine", sent["text"], trigger_id=sent["trigger_id"], retry_num=1)
    await app.replies(2)
    [job] = await app.jobs()
    assert job.request.prompt == "a red cube" and job.request.steps == 5
    assert job.request.width > job.request.height
    assert job.request.origin.request_id == sent["trigger_id"]
    assert job.request.origin.guild == "T0001" and job.request.origin.channel == "C0001"


async def test_bad_option_gets_a_specific_ephemeral_error(app: App) -> None:
    await app.slack.command("/imagine", "a cube --steps 500")
    [reply] = await app.replies()
    assert reply["text"] == "steps must be between 1 and 60 (got 500)."
    assert reply["response_type"] == "ephemeral"
    await app.slack.command("/depth", "a hill")
    assert "mentions me" in (await app.replies(2))[1]["text"]
    assert await app.jobs() == []


async def test_bad_signature_is_rejected_without_logging_the_body(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    status, _ = await app.slack.post(
        "command=%2Fimagine&text=secret-prompt-text", "application/x-www-form-urlencoded",
        signature="v0=" + "0" * 64,
    )  # fmt: skip
    assert status == 401
    stale = str(10**9)  # 2001: outside the five-minute window
    status, _ = await app.slack.post("command=%2Fimagine&text=secret-prompt-text",
                                     "application/x-www-form-urlencoded", timestamp=stale)  # fmt: skip
    assert status == 401
    assert all("secret-prompt-text" not in r.getMessage() for r in caplog.records)
    assert await app.jobs() == []


@pytest.mark.parametrize("timestamp", ["soon", "", "\u00b2", "9" * 5000, "-1"])
async def test_non_numeric_timestamp_is_a_client_error(app: App, timestamp: str) -> None:
    status, _ = await app.slack.post("command=%2Fimagine&text=x",
                                     "application/x-www-form-urlencoded", timestamp=timestamp)  # fmt: skip
    assert 400 <= status < 500


async def test_mention_with_a_file_queues_a_depth_job_once(app: App) -> None:
    file = app.fake.add_file(png("red"))  # a photo: a flat grey map is refused at admission
    sent = await app.slack.mention("<@UBOT> depth a hill &amp; a lake", files=[file])
    assert sent["status"] == 200
    await app.fake.wait_for(lambda f: f.find("chat.postEphemeral"))
    await app.slack.mention(sent["event"]["text"], files=[file], event_id=sent["event_id"],
                            retry_num=1)  # fmt: skip
    [job] = await app.jobs()
    assert job.request.kind.value == "depth" and job.request.prompt == "a hill & a lake"
    [upload] = await app.storage.artifacts(job.id)
    assert upload.kind is ArtifactKind.INPUT and upload.data == png("red")
    [ephemeral] = app.fake.find("chat.postEphemeral")  # the retry was not answered twice
    assert ephemeral.args["user"] == "U0001" and ephemeral.args["text"].startswith("Queued")


async def test_delivery_uploads_files_and_escapes_user_text(app: App) -> None:
    await app.slack.command("/imagine", "&lt;!channel&gt; &amp; friends")
    await app.replies()
    [job] = await app.jobs()
    assert job.request.prompt == "<!channel> & friends"
    await app.finish(job)
    assert await app.deliver() == 1
    [upload] = app.fake.find("upload")
    assert upload.data == png()
    [complete] = app.fake.find("files.completeUploadExternal")
    assert complete.args.get("channel_id") == "C0001", complete.args
    assert "&lt;!channel&gt; &amp; friends" in complete.args["initial_comment"]
    assert "<!channel>" not in complete.args["initial_comment"]
    [post] = app.fake.find("chat.postMessage")
    blocks = post.args["blocks"]
    blocks = blocks if isinstance(blocks, list) else __import__("json").loads(blocks)
    values = [e["value"] for b in blocks if b["type"] == "actions" for e in b["elements"]]
    assert values == [f"gouache:{a}:{job.id}" for a in ("reroll", "gif", "diversify")]
    assert "<!channel>" not in post.args["text"]


async def test_reroll_button_creates_a_new_job_with_a_new_seed(app: App) -> None:
    await app.slack.command("/imagine", "a cube --seed 7")
    await app.replies()
    [job] = await app.jobs()
    pressed = await app.slack.press(f"gouache:reroll:{job.id}", user="U0002")
    assert pressed["status"] == 200
    replies = await app.replies(2)
    assert replies[1]["text"].startswith("Queued: #2")
    [new] = [j for j in await app.jobs() if j.id != job.id]
    assert new.request.seed != 7 and new.request.origin.user == "U0002"
    assert new.request.origin.request_id == pressed["trigger_id"]


async def test_rate_limited_post_is_retried(app: App) -> None:
    await app.slack.command("/imagine", "a cube")
    await app.replies()
    [job] = await app.jobs()
    await app.finish(job)
    app.fake.fail_next("chat.postMessage", 429, retry_after=0)
    assert await app.deliver() == 1
    posts = [c for c in app.fake.calls if c.method == "chat.postMessage"]
    assert [c.status for c in posts] == [429, 200]


async def test_service_seam_exposes_the_events_route(tmp_path: Path) -> None:
    from contextlib import AsyncExitStack

    from gouache.bot.adapters.slack import app as slack_adapter

    settings = Settings(data_dir=tmp_path, slack=SlackSettings(bot_token="x", signing_secret="y"))
    async with open_storage(f"sqlite:///{tmp_path / 'q.db'}") as storage, AsyncExitStack() as stack:
        adapter = await slack_adapter.open_adapter(
            adapter_deps(settings, storage), stack
        )
        [route] = adapter.routes()
        assert (route.method, route.path) == ("POST", "/slack/events")


async def test_url_verification_challenge_is_answered(app: App) -> None:
    body = '{"token": "legacy", "challenge": "abc123", "type": "url_verification"}'
    status, reply = await app.slack.post(body, "application/json")
    assert status == 200 and "abc123" in reply


async def test_progress_message_is_posted_then_updated_then_replaced(app: App) -> None:
    from gouache.bot.adapter import Progress

    await app.slack.command("/imagine", "a <b> cube")
    await app.replies()
    [job] = await app.jobs()
    for fraction in (0.1, 0.2):  # the second is within 3 s: dropped
        await app.adapter.show_progress(Progress(job=job, fraction=fraction))
    [post] = app.fake.find("chat.postMessage")
    assert post.args["text"].startswith("Generating… 10%") and "&lt;b&gt;" in post.args["text"]
    assert app.fake.find("chat.update") == []
    await app.storage.claim_batch("worker-1", 8, 60.0)
    await app.storage.fail(job.id, "worker-1", "Out of memory.")
    assert await app.deliver() == 1
    [update] = app.fake.find("chat.update")
    assert update.args["ts"] == post.extra["response"]["ts"]
    assert update.args["text"].startswith("Out of memory.")


async def test_cancel_button_on_the_queue_reply(app: App) -> None:
    await app.slack.command("/imagine", "a cube")
    [reply] = await app.replies()
    [actions] = [b for b in reply["blocks"] if b["type"] == "actions"]
    [button] = actions["elements"]
    await app.slack.press(button["value"], user="U0009")
    assert (await app.replies(2))[1]["text"] == "You can only cancel your own jobs."
    await app.slack.press(button["value"])
    assert (await app.replies(3))[2]["text"] == "Cancelled."
    [job] = await app.jobs()
    assert job.status.value == "cancelled"

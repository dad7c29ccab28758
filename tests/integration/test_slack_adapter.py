"""The real slack-bolt app and slack_sdk client against the local fake Slack, in both modes.

Slash commands, mentions and buttons arrive over signed HTTP or as Socket Mode envelopes; the
assertions are on what reaches the fake Web API and response_url.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from gouache.config import Settings, SlackSettings
from gouache.storage import ArtifactKind, open_storage
from tests.fakes.fake_slack import SlackSender, blocks_of
from tests.fakes.slack_app import SlackApp, png, slack_app
from tests.support.adapters import adapter_deps


@pytest.fixture(params=["http", "socket"])
async def app(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SlackApp]:
    async with open_storage(f"sqlite:///{tmp_path / 'q.db'}") as storage, slack_app(
        storage, tmp_path, mode=request.param
    ) as harness:  # fmt: skip
        yield harness


async def test_slash_command_becomes_one_job_and_a_retry_does_nothing(app: SlackApp) -> None:
    sent = await app.slack.command("/imagine", "a red cube --steps 5 --ar 16:9")
    assert sent["status"] == 200
    [reply] = await app.replies()
    assert reply["response_type"] == "ephemeral" and reply["text"].startswith("Queued: next")
    retry = {"retry_num": 1} if app.socket is None else {"retry_attempt": 1}
    again = await app.slack.command("/imagine", sent["text"], trigger_id=sent["trigger_id"],
                                    **retry)  # fmt: skip
    assert again["status"] == 200
    [job] = await app.jobs()
    assert len(app.fake.find("response")) == 1  # the retry was acknowledged, nothing more
    assert job.request.prompt == "a red cube" and job.request.steps == 5
    assert job.request.width > job.request.height
    assert job.request.origin.request_id == sent["trigger_id"]
    assert job.request.origin.guild == "T0001" and job.request.origin.channel == "C0001"


async def test_bad_option_gets_a_specific_ephemeral_error(app: SlackApp) -> None:
    await app.slack.command("/imagine", "a cube --steps 500")
    [reply] = await app.replies()
    assert reply["text"] == "steps must be between 1 and 60 (got 500)."
    assert reply["response_type"] == "ephemeral"
    assert await app.jobs() == []


async def test_mention_with_a_file_queues_a_depth_job_and_a_retry_is_not_downloaded(
    app: SlackApp,
) -> None:
    file = app.fake.add_file(png("red"))  # a photo: a flat grey map is refused at admission
    sent = await app.slack.mention("<@UBOT> depth a hill &amp; a lake", files=[file])
    assert sent["status"] == 200
    await app.fake.wait_for(lambda f: f.find("chat.postEphemeral"))
    retry = {"retry_num": 1} if app.socket is None else {"retry_attempt": 1}
    await app.slack.mention(sent["event"]["text"], files=[file], event_id=sent["event_id"],
                            **retry)  # fmt: skip
    [job] = await app.jobs()
    assert job.request.kind.value == "depth" and job.request.prompt == "a hill & a lake"
    [upload] = await app.storage.artifacts(job.id)
    assert upload.kind is ArtifactKind.INPUT and upload.data == png("red")
    assert app.fake.downloads == [file["id"]]  # the retry fetched nothing
    [ephemeral] = app.fake.find("chat.postEphemeral")  # and was not answered twice
    assert ephemeral.args["user"] == "U0001" and ephemeral.args["text"].startswith("Queued")


async def test_a_depth_strength_sweep_on_a_photo_runs_and_posts_the_grid_and_cells(
    app: SlackApp,
) -> None:
    """/depth --sweep strength with a photo (its depth estimated by the model's estimator):
    queued, run by the real worker loop (timed engine), and delivered as grid + cells + the
    depth map the cells followed (once)."""
    import asyncio
    import io

    import numpy as np
    from PIL import Image

    from gouache.storage.jobs import JobStatus
    from gouache.worker.loop import Worker
    from tests.support.engines import TimedEngine

    pixels = np.random.default_rng(5).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    file = app.fake.add_file(buffer.getvalue(), "photo.png")
    await app.slack.mention("<@UBOT> depth a hill --steps 3 --sweep strength=0.3,0.6,1.0", files=[file])
    [job] = await app.wait_jobs()
    assert job.request.sweep == (("strength", ("0.3", "0.6", "1")),) and job.images == 3
    stop = asyncio.Event()
    worker = asyncio.create_task(Worker(app.storage, TimedEngine(), app.settings, "w1").run(stop))
    try:
        for _ in range(600):
            job = await app.storage.get_job(job.id)
            if job.is_terminal:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await worker
    assert job.status is JobStatus.SUCCEEDED, job.error
    stored = [a.name for a in await app.storage.artifacts(job.id) if a.kind is not ArtifactKind.INPUT]
    assert sorted(stored) == ["depth.png", "grid.png", "image-0.png", "image-1.png", "image-2.png"]
    assert await app.deliver() == 1
    assert len(app.fake.find("upload")) == 5  # the grid, the three cells and the depth map used


async def test_delivery_uploads_into_the_job_thread_and_escapes_user_text(app: SlackApp) -> None:
    await app.slack.command("/imagine", "&lt;!channel&gt; &amp; friends")
    await app.replies()
    [job] = await app.jobs()
    assert job.request.prompt == "<!channel> & friends"
    await app.finish(job)
    assert await app.deliver() == 1
    [upload] = app.fake.find("upload")
    assert upload.data == png()
    [root] = app.fake.find("chat.postMessage")
    [complete] = app.fake.find("files.completeUploadExternal")
    assert complete.args.get("channel_id") == "C0001", complete.args
    assert complete.args.get("thread_ts") == root.extra["response"]["ts"]
    assert "&lt;!channel&gt; &amp; friends" in complete.args["initial_comment"]
    assert "<!channel>" not in complete.args["initial_comment"]
    assert "<!channel>" not in root.args["text"]
    values = [e["value"] for b in blocks_of(root) if b["type"] == "actions" for e in b["elements"]]
    assert values == [f"gouache:{a}:{job.id}" for a in ("reroll", "variations", "gif", "diversify")] + [
        f"gouache:{a}.0:{job.id}" for a in ("upscale", "vary-subtle", "vary-strong")]  # U and V per image


async def test_reroll_button_creates_a_new_job_with_a_new_seed(app: SlackApp) -> None:
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


async def test_rate_limited_post_is_retried(app: SlackApp) -> None:
    await app.slack.command("/imagine", "a cube")
    await app.replies()
    [job] = await app.jobs()
    await app.finish(job)
    app.fake.fail_next("chat.postMessage", 429, retry_after=0)
    assert await app.deliver() == 1
    posts = [c for c in app.fake.calls if c.method == "chat.postMessage"]
    assert [c.status for c in posts] == [429, 200]


async def test_cancel_button_on_the_queue_reply(app: SlackApp) -> None:
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


async def test_url_verification_challenge_is_answered(tmp_path: Path) -> None:
    async with open_storage(f"sqlite:///{tmp_path / 'q.db'}") as storage, slack_app(
        storage, tmp_path
    ) as app:  # fmt: skip
        assert isinstance(app.slack, SlackSender)
        body = '{"token": "legacy", "challenge": "abc123", "type": "url_verification"}'
        status, reply = await app.slack.post(body, "application/json")
        assert status == 200 and "abc123" in reply


@pytest.mark.parametrize(("tokens", "routes"), [
    ({"signing_secret": "y"}, [("POST", "/slack/events")]),
    ({"app_token": "xapp-1-A0001-abc"}, []),
])  # fmt: skip
async def test_service_seam_mounts_the_endpoint_only_in_http_mode(
    tmp_path: Path, tokens: dict[str, str], routes: list[tuple[str, str]]
) -> None:
    from gouache.bot.adapters.slack import app as slack_adapter

    settings = Settings(data_dir=tmp_path, slack=SlackSettings(bot_token="x", **tokens))
    async with open_storage(f"sqlite:///{tmp_path / 'q.db'}") as storage, AsyncExitStack() as stack:
        adapter = slack_adapter.SlackAdapter(adapter_deps(settings, storage))
        stack.push_async_callback(adapter.close)
        assert [(r.method, r.path) for r in adapter.routes()] == routes
        assert (adapter.socket is not None) == ("app_token" in tokens)

"""/depth on Slack: the modal, its file input, the message shortcut, and whole downloads.

The 3 MB PNG is random noise (it does not compress) served by the fake in 16 KiB chunks with
a pause between them over a real loopback socket, the way a real network delivers it; a
single ``read(n)`` would have returned only the first chunks.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from gouache.bot.adapters.slack import replies
from gouache.config import Limits
from gouache.storage import ArtifactKind, JobStatus, open_storage
from gouache.worker.loop import Worker
from tests.fakes.slack_app import SlackApp, png, slack_app
from tests.support.engines import TimedEngine

CHUNK = 16 * 1024


def noise_png(side: int = 1024) -> bytes:
    rng = random.Random(3)
    image = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()


@pytest.fixture(params=["http", "socket"])
async def app(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SlackApp]:
    async with open_storage(f"sqlite:///{tmp_path / 'q.db'}") as storage, slack_app(
        storage, tmp_path, mode=request.param, limits=Limits(max_upload_bytes=8 * 1024 * 1024)
    ) as harness:  # fmt: skip
        yield harness


async def _open_modal(app: SlackApp, text: str = "a hill --steps 5") -> dict:
    before = len(app.fake.find("views.open"))
    sent = await app.slack.command("/depth", text)
    await app.fake.wait_for(lambda f: len(f.find("views.open")) > before, timeout=30)
    opened = app.fake.find("views.open")[-1]
    assert opened.args["trigger_id"] == sent["trigger_id"]
    return opened.args["view"]


async def test_depth_command_opens_a_prefilled_modal_with_a_file_input(app: SlackApp) -> None:
    view = await _open_modal(app)
    inputs = {b["block_id"]: b["element"] for b in view["blocks"] if b["type"] == "input"}
    assert inputs["prompt"]["initial_value"] == "a hill"
    assert inputs["options"]["initial_value"] == "--steps 5"
    assert inputs["file"]["type"] == "file_input" and "png" in inputs["file"]["filetypes"]
    assert view["callback_id"] == "gouache_depth"
    assert json.loads(view["private_metadata"])["channel"] == "C0001"
    assert await app.jobs() == []


async def test_a_3_mb_png_served_in_chunks_arrives_whole_and_the_job_completes(app: SlackApp) -> None:
    data = noise_png()
    assert len(data) > 3_000_000
    view = await _open_modal(app, "a hill --steps 5 --gif")
    file = app.fake.add_file(data, "depth.png", chunk=CHUNK, pause=0.001)
    submitted = await app.slack.submit(view, files=[file])
    assert submitted["status"] == 200
    [reply] = await app.replies()
    assert reply["text"].startswith("Queued")
    [job] = await app.jobs()
    assert job.request.kind.value == "depth" and job.request.steps == 5
    [upload] = await app.storage.artifacts(job.id)
    assert upload.kind is ArtifactKind.INPUT and upload.data == data  # every byte
    # the real worker loop (a fake GPU) takes the job from the queue to the end
    stop = asyncio.Event()
    worker = asyncio.create_task(Worker(app.storage, TimedEngine(), app.settings, "w1").run(stop))
    for _ in range(200):
        if (await app.storage.get_job(job.id)).is_terminal:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await worker
    assert (await app.storage.get_job(job.id)).status is JobStatus.SUCCEEDED
    assert await app.deliver() == 1
    [root] = app.fake.find("chat.postMessage")
    [complete] = app.fake.find("files.completeUploadExternal")
    assert complete.args["thread_ts"] == root.extra["response"]["ts"]
    made = {a.kind: a.data for a in await app.storage.artifacts(job.id)}
    uploaded = sorted(u.data for u in app.fake.find("upload"))
    # the image, its GIF and the depth map the job used (issue 13: shown beside the result)
    assert uploaded == sorted([made[ArtifactKind.IMAGE], made[ArtifactKind.GIF], made[ArtifactKind.DEPTH]])
    assert any(d.startswith(b"\x89PNG") for d in uploaded) and any(d.startswith(b"GIF8") for d in uploaded)


async def test_typing_mistakes_are_shown_in_the_modal(app: SlackApp) -> None:
    view = await _open_modal(app)
    submitted = await app.slack.submit(view, options="--steps 500", files=[app.fake.add_file(png())])
    answer = json.loads(submitted["reply"])
    answer = answer.get("payload", answer)  # Socket Mode wraps the ack's body
    assert answer["response_action"] == "errors"
    assert "steps must be between 1 and 60" in answer["errors"]["prompt"]
    missing = await app.slack.submit(view)
    answer = json.loads(missing["reply"])
    assert answer.get("payload", answer)["errors"]["file"]
    assert await app.jobs() == [] and app.fake.downloads == []


@pytest.mark.parametrize(("serve", "told"), [
    ({"html": True}, replies.SIGN_IN_PAGE),
    ({"short_by": 5000}, "arrived incomplete"),
])  # fmt: skip
async def test_sign_in_pages_and_truncated_bodies_are_refused(
    app: SlackApp, serve: dict, told: str
) -> None:
    view = await _open_modal(app)
    await app.slack.submit(view, files=[app.fake.add_file(noise_png(256), **serve)])
    [reply] = await app.replies()
    assert told in reply["text"]
    assert await app.jobs() == []


async def test_too_big_is_refused_before_and_while_reading(app: SlackApp) -> None:
    view = await _open_modal(app)
    big = app.fake.add_file(b"\x89PNG\r\n\x1a\n" + bytes(9 * 1024 * 1024))
    await app.slack.submit(view, files=[big])
    assert "the limit is 8,388,608" in (await app.replies())[0]["text"]
    assert app.fake.downloads == []  # Slack's declared size was enough to refuse it
    total = 8 + 9 * 1024 * 1024
    for n, length in enumerate((False, True), start=2):  # streamed, then Content-Length
        lying = app.fake.add_file(b"\x89PNG\r\n\x1a\n" + bytes(9 * 1024 * 1024), length=length)
        lying["size"] = 1000  # Slack's file object understates it: the bytes must be counted
        view = await _open_modal(app)
        await app.slack.submit(view, files=[lying])
        assert "the limit is 8,388,608" in (await app.replies(n))[n - 1]["text"]
        await asyncio.sleep(0.2)
        served = app.fake.served[lying["id"]]
        # chunked: reading stopped at the cap; Content-Length: refused before the body was read
        # (measured: 8,404,992 and 16,384 bytes; the slack allows for socket buffers)
        limit = 4 * 1024 * 1024 if length else 8 * 1024 * 1024 + 2 * 1024 * 1024
        assert served < min(limit, total), served
    assert await app.jobs() == []


async def test_use_as_depth_map_shortcut_opens_the_modal_with_that_image(app: SlackApp) -> None:
    data = png("red", 64)  # a photo: a flat grey "depth map" is refused at admission
    file = app.fake.add_file(data, "photo.png")
    message = {"type": "message", "user": "U0002", "ts": "1700000000.000100", "text": "look",
               "files": [file]}  # fmt: skip
    sent = await app.slack.shortcut(message)
    await app.fake.wait_for(lambda f: f.find("views.open"), timeout=3.0)
    [opened] = app.fake.find("views.open")
    assert opened.args["trigger_id"] == sent["trigger_id"]
    view = opened.args["view"]
    assert "photo.png" in json.dumps(view["blocks"])
    await app.slack.submit(view, prompt="a hill at dusk")
    await app.replies()
    [job] = await app.jobs()
    assert job.request.prompt == "a hill at dusk"
    [upload] = await app.storage.artifacts(job.id)
    assert upload.data == data


async def test_shortcut_on_a_message_without_an_image_says_so(app: SlackApp) -> None:
    await app.slack.shortcut({"type": "message", "ts": "1.2", "text": "no files here"})
    [reply] = await app.replies()
    assert reply["text"] == replies.NO_IMAGE_ON_MESSAGE
    assert app.fake.find("views.open") == []


async def test_the_ack_does_not_wait_for_a_slow_download(app: SlackApp) -> None:
    """Slack gives 3 s: the file is fetched after the ack, however long it takes to arrive
    (here its body is held back until the ack has come)."""
    data = noise_png()
    held = asyncio.Event()
    slow = app.fake.add_file(data, "slow.png", chunk=CHUNK, gate=held)
    view = await _open_modal(app)
    # An ack that waited for the file would never come: the file waits for the ack.
    submitted = await asyncio.wait_for(app.slack.submit(view, files=[slow]), 30)
    assert submitted["status"] == 200
    assert app.fake.served.get(slow["id"], 0) == 0 and await app.jobs() == []
    held.set()
    await app.wait_jobs(1)
    [upload] = await app.storage.artifacts((await app.jobs())[0].id)
    assert upload.data == data

"""Starting from an image, end to end on each platform's fake: an attachment in, the real worker
loop (a fake GPU: ``TimedEngine``) and delivery, an image out; then, in a new adapter over the
same queue (a restart), the U and V buttons under that image and a reply to the result each
make a new job from that image, and those come out too.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from PIL import Image

from gouache.bot.delivery import Delivery
from gouache.request import Kind
from gouache.storage import ArtifactKind, Job, JobStatus, Storage, open_storage
from gouache.worker.loop import Worker
from tests.fakes.fake_discord import FakeDiscord
from tests.fakes.slack_app import slack_app
from tests.support.discord_bot import Bot, running_bot, wait_edits
from tests.support.engines import TimedEngine


def photo(size: tuple[int, int] = (48, 32)) -> bytes:
    """A 3:2 picture with detail (flat images are fine too; this one shows the aspect kept)."""
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


async def run_worker(storage: Storage, settings, count: int) -> list[Job]:  # type: ignore[no-untyped-def]
    """The real worker loop until ``count`` jobs are finished; returns them, oldest first."""
    stop = asyncio.Event()
    worker = asyncio.create_task(Worker(storage, TimedEngine(), settings, "w1").run(stop))
    try:
        for _ in range(400):
            jobs = await storage.list_jobs(limit=100)
            if len(jobs) >= count and all(j.is_terminal for j in jobs):
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await worker
    jobs = sorted(await storage.list_jobs(limit=100), key=lambda j: j.created_at)
    assert [j.status for j in jobs] == [JobStatus.SUCCEEDED] * len(jobs), [j.error for j in jobs]
    return jobs


def size_of(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


async def test_discord_attachment_in_image_out_then_u_v_and_a_reply_after_a_restart(
    tmp_path: Path,
) -> None:
    async with FakeDiscord() as fake, open_storage(f"sqlite:///{tmp_path / 'q.db'}") as storage:
        async with running_bot(fake, tmp_path, storage) as first:
            attachment = fake.attachment("fox.png", photo())
            payload, edits = await first.command(
                "imagine", {"prompt": "a red fox", "image": attachment["id"], "strength": 0.5,
                            "steps": 4}, attachments={attachment["id"]: attachment})  # fmt: skip
            assert edits[0].content.startswith("Queued"), edits[0].content
            assert "Remixing the image at strength 0.5" in edits[0].content
            [job] = await run_worker(storage, first.settings, 1)
            assert job.request.from_image and job.request.width * 2 == job.request.height * 3
            assert await first.deliver() == 1
        [post] = fake.find("POST", f"/webhooks/{fake.application_id}/{payload['token']}")
        assert [name for name, _ in post.files] == ["image-0.png"]
        assert size_of(post.files[0][1]) == (job.request.width, job.request.height)
        message_id = next(k for k, m in fake.messages.items()
                          if m["content"] == post.content and k.isdigit())  # fmt: skip

        async with running_bot(fake, tmp_path, storage) as second:  # a new process, same queue
            for action in ("upscale.0", "vary-subtle.0"):
                press = await fake.press_button(f"gouache:{action}:{job.id}", message_id=message_id)
                assert (await wait_edits(fake, press["token"]))[0].content.startswith("Queued")
            await _reply(second, message_id, "a blue fox --strength 0.4")
            jobs = await run_worker(storage, second.settings, 4)
            upscale, vary, remix = jobs[1:]
            assert upscale.request.kind is Kind.UPSCALE and upscale.request.prompt == "a red fox"
            assert (upscale.request.width, upscale.request.height) == (
                job.request.width * 2, job.request.height * 2)  # fmt: skip
            assert vary.request.kind is Kind.IMAGINE and vary.request.denoise == 0.35
            assert remix.request.prompt == "a blue fox" and remix.request.denoise == 0.4
            for made in (upscale, vary, remix):
                [source] = [a for a in await storage.artifacts(made.id) if a.kind is ArtifactKind.INPUT]
                [image] = [a for a in await storage.artifacts(job.id) if a.kind is ArtifactKind.IMAGE]
                assert source.data == image.data  # started from the result, not re-uploaded
            assert await second.deliver() == 3
        sizes = [size_of(data) for call in fake.find("POST") for name, data in call.files
                 if call is not post and name.startswith("image-")]  # fmt: skip
        assert sorted(sizes) == sorted((j.request.width, j.request.height) for j in jobs[1:])


async def _reply(bot: Bot, message_id: str, text: str) -> None:
    """A user's message replying to the bot's result (the reply mentions the bot, as Discord's
    reply does by default); waits for the bot's answer."""
    fake = bot.fake
    replied = fake.messages[message_id]
    before = len(fake.find("POST", f"/channels/{replied['channel_id']}/messages"))
    user = {"id": "300000000000000002", "username": "someone", "discriminator": "0",
            "global_name": None, "avatar": None}  # fmt: skip
    await fake.dispatch("MESSAGE_CREATE", {
        "id": "900000000000000001", "channel_id": replied["channel_id"],
        "guild_id": "500000000000000001", "type": 19, "content": f"<@{fake.bot_id}> {text}",
        "author": user, "attachments": [], "embeds": [], "mentions": [fake._bot_user()],
        "mention_roles": [], "pinned": False, "mention_everyone": False, "tts": False,
        "timestamp": replied["timestamp"], "edited_timestamp": None, "flags": 0, "components": [],
        "message_reference": {"message_id": message_id, "channel_id": replied["channel_id"],
                              "guild_id": "500000000000000001"},
        "referenced_message": replied,
    })  # fmt: skip
    await fake.wait_for(lambda f: len(f.find("POST", f"/channels/{replied['channel_id']}/messages")) > before)
    answer = fake.find("POST", f"/channels/{replied['channel_id']}/messages")[-1]
    assert answer.json["content"].startswith("Queued"), answer.json
    assert str(answer.json["message_reference"]["message_id"]) == "900000000000000001"  # a reply


async def test_slack_image_modal_in_image_out_then_u_v_and_remix_shortcut_after_a_restart(
    tmp_path: Path,
) -> None:
    async with open_storage(f"sqlite:///{tmp_path / 'q.db'}") as storage:
        async with slack_app(storage, tmp_path) as first:
            await first.slack.command("/upscale", "--scale 2 --steps 4")
            await first.fake.wait_for(lambda f: f.find("views.open"), timeout=30)
            view = first.fake.find("views.open")[-1].args["view"]
            inputs = {b["block_id"]: b["element"] for b in view["blocks"] if b["type"] == "input"}
            assert "npy" not in inputs["file"]["filetypes"]  # an image, not a depth map
            file = first.fake.add_file(photo(), "fox.png")
            submitted = await first.slack.submit(view, prompt="a red fox", files=[file])
            assert submitted["status"] == 200
            [reply] = await first.replies()
            assert reply["text"].startswith("Queued") and "Upscaled 48x32 to 96x64" in reply["text"]
            [job] = await run_worker(storage, first.settings, 1)
            assert job.request.kind is Kind.UPSCALE and (job.request.width, job.request.height) == (96, 64)
            assert await first.deliver() == 1
            [upload] = first.fake.find("upload")
            assert size_of(upload.data) == (96, 64)
            final = [*first.fake.find("chat.postMessage"), *first.fake.find("chat.update")][-1]
            values = [e["value"] for b in _blocks(final.args) if b["type"] == "actions"
                      for e in b["elements"]]  # fmt: skip
            assert values == [f"gouache:vary-subtle.0:{job.id}", f"gouache:vary-strong.0:{job.id}"]

        async with slack_app(storage, tmp_path) as second:  # a new process, same queue
            await second.slack.press(f"gouache:vary-strong.0:{job.id}")
            await second.replies(1)
            # "Remix this image" on the message that carries the result's file
            posted = second.fake.add_file(upload.data, "image-0.png")
            await second.slack.shortcut({"ts": "2.0", "files": [posted]}, callback_id="gouache_remix")
            await second.fake.wait_for(lambda f: f.find("views.open"), timeout=30)
            remix_view = second.fake.find("views.open")[-1].args["view"]
            assert remix_view["title"]["text"] == "Remix an image"
            await second.slack.submit(remix_view, prompt="a blue fox", options="--strength 0.5 --steps 4")
            await second.replies(2)
            jobs = await run_worker(storage, second.settings, 3)
            vary, remix = jobs[1:]
            assert vary.request.kind is Kind.IMAGINE and vary.request.denoise == 0.7
            assert remix.request.kind is Kind.IMAGINE and remix.request.denoise == 0.5
            assert remix.request.from_image and remix.request.prompt == "a blue fox"
            assert await Delivery(storage, {"slack": second.adapter}).deliver_pending() == 2
            sizes = sorted(size_of(u.data) for u in second.fake.find("upload"))
            assert sizes == sorted((j.request.width, j.request.height) for j in jobs[1:])


async def test_slack_a_reply_in_a_results_thread_remixes_it_after_a_restart(tmp_path: Path) -> None:
    """A thread reply to a delivered result (``upscale``, or a prompt) starts from that result's
    image with no upload and is delivered into the same thread; our own posts, top-level
    messages, mentions and threads that are no result's are left alone."""
    async with open_storage(f"sqlite:///{tmp_path / 'q.db'}") as storage:
        async with slack_app(storage, tmp_path) as first:
            await first.slack.command("/imagine", "a red fox --steps 4 --size 48x32")
            await first.replies(1)
            [job] = await run_worker(storage, first.settings, 1)
            assert await first.deliver() == 1
            thread = first.fake.find("chat.postMessage")[0].extra["response"]["ts"]
            [upload] = first.fake.find("upload")

        async with slack_app(storage, tmp_path) as second:  # a new process, same queue
            ignored = [
                second.slack.message("a blue fox", thread_ts=thread, bot_id="B1"),  # our own post
                second.slack.message("a blue fox", thread_ts=thread, subtype="message_changed"),
                second.slack.message("a blue fox"),  # not in a thread
                second.slack.message("a blue fox", thread_ts="1.000001"),  # no result's thread
                second.slack.message("<@UBOT> a blue fox", thread_ts=thread),  # app_mention's
            ]
            for sent in ignored:
                assert (await sent)["status"] == 200
            await second.slack.message("a blue fox --strength 0.4 --steps 4", thread_ts=thread)
            await second.slack.message("upscale --steps 4", thread_ts=thread)
            await second.wait_jobs(3)
            await second.fake.wait_for(lambda f: len(f.find("chat.postEphemeral")) >= 2)
            told = [c.args["text"] for c in second.fake.find("chat.postEphemeral")]
            assert len(told) == 2 and all(t.startswith("Queued") for t in told), told
            jobs = await run_worker(storage, second.settings, 3)
            remix, upscale = jobs[1:]
            assert remix.request.kind is Kind.IMAGINE and remix.request.from_image
            assert remix.request.prompt == "a blue fox" and remix.request.denoise == 0.4
            assert upscale.request.kind is Kind.UPSCALE and upscale.request.prompt == job.request.prompt
            assert (upscale.request.width, upscale.request.height) == (96, 64)
            for made in (remix, upscale):
                [source] = [a for a in await storage.artifacts(made.id) if a.kind is ArtifactKind.INPUT]
                assert size_of(source.data) == size_of(upload.data) == (48, 32)
            assert await second.deliver() == 2
            completes = second.fake.find("files.completeUploadExternal")
            assert [c.args["thread_ts"] for c in completes] == [thread, thread]  # the same thread
            assert sorted(size_of(u.data) for u in second.fake.find("upload")) == [(48, 32), (96, 64)]


def _blocks(args: dict) -> list[dict]:  # type: ignore[type-arg]
    import json

    blocks = args.get("blocks") or []
    return json.loads(blocks) if isinstance(blocks, str) else blocks

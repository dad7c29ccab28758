"""The real discord.py client against the local fake Discord: commands, buttons, delivery."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gouache.bot.adapter import Progress
from gouache.bot.admission import Admission
from gouache.bot.delivery import Delivery
from gouache.storage import ArtifactKind, open_storage
from tests.fakes.fake_discord import FakeDiscord, OptionRejected
from tests.support.adapters import adapter_deps
from tests.support.discord_bot import (
    NO_MENTIONS,
    Bot,
    gif,
    make_settings,
    original_edits,
    png,
    running_bot,
    start_client,
    wait_edits,
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


@pytest.fixture
async def bot(fake: FakeDiscord, tmp_path: Path) -> AsyncIterator[Bot]:
    async with running_bot(fake, tmp_path) as running:
        yield running


async def test_commands_are_registered_once_with_typed_options(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, fake)
    async with open_storage(f"sqlite:///{tmp_path / 'queue.db'}") as storage:
        for _ in range(2):  # the second start finds the stored hash and registers nothing
            client, task = await start_client(settings, storage)
            await client.close()
            await task
    puts = fake.find("PUT", "/commands")
    assert len(puts) == 1
    commands = {c["name"]: c for c in puts[0].json}
    assert set(commands) == {"imagine", "depth", "upscale", "edit", "diversity", "interpolate", "help",
                             "loras", "queue", "cancel", "gouache"}
    for listing in ("help", "loras"):  # request.LISTINGS: an optional model, autocompleted
        [model] = commands[listing]["options"]
        assert (model["name"], model["autocomplete"], model.get("required", False)) == ("model", True, False)
    imagine = {o["name"]: o for o in commands["imagine"]["options"]}
    assert imagine["prompt"]["required"] is True
    assert imagine["prompt"]["max_length"] == settings.limits.max_prompt_chars
    assert imagine["steps"]["type"] == 4 and imagine["guidance"]["type"] == 10
    assert (imagine["steps"]["min_value"], imagine["steps"]["max_value"]) == (1, 60)
    assert (imagine["guidance"]["min_value"], imagine["guidance"]["max_value"]) == (0, 30.0)
    assert (imagine["count"]["min_value"], imagine["count"]["max_value"]) == (1, 16)
    assert (imagine["width"]["min_value"], imagine["width"]["max_value"]) == (32, 2048)
    assert {"16:9", "1:1"} <= {c["value"] for c in imagine["aspect_ratio"]["choices"]}
    assert imagine["sampler"]["autocomplete"] is True and "choices" not in imagine["sampler"]
    assert imagine["model"]["autocomplete"] is True and "choices" not in imagine["model"]
    depth = {o["name"]: o for o in commands["depth"]["options"]}
    assert depth["image"]["type"] == 11 and depth["image"]["required"] is True
    assert set(imagine) == set(depth)  # the same options; the image optional on /imagine (a remix)
    assert imagine["image"]["type"] == 11 and imagine["image"]["required"] is False
    assert (depth["strength"]["min_value"], depth["strength"]["max_value"]) == (0.0, 2.0)
    assert (imagine["strength"]["min_value"], imagine["strength"]["max_value"]) == (0.0, 1.0)
    upscale = {o["name"]: o for o in commands["upscale"]["options"]}
    assert upscale["image"]["type"] == 11 and upscale["image"]["required"] is True
    assert "prompt" in upscale and upscale["prompt"]["required"] is False  # ours remember theirs
    assert (upscale["scale"]["min_value"], upscale["scale"]["max_value"]) == (1.0, 4.0)
    edit = {o["name"]: o for o in commands["edit"]["options"]}
    assert edit["image"]["required"] is True and edit["prompt"]["required"] is True
    diversity = {o["name"]: o for o in commands["diversity"]["options"]}
    assert (diversity["count"]["min_value"], diversity["count"]["max_value"]) == (2, 16)
    admin = {o["name"]: o for o in commands["gouache"]["options"]}
    assert set(admin) == {"pause", "resume", "reset-limits", "usage"}
    assert admin["reset-limits"]["options"][0]["type"] == 6  # a user
    assert str(commands["gouache"]["default_member_permissions"]) == "32"  # a hint only


async def test_slash_command_becomes_one_job_even_when_redelivered(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="discord")
    fake = bot.fake
    payload = await fake.slash_command("imagine", {"prompt": "a red cube @everyone", "steps": 5})
    edits = await wait_edits(fake, payload["token"])
    callbacks = fake.find("POST", f"/interactions/{payload['id']}/")
    assert callbacks[0].json == {"type": 5, "data": {"flags": 64}}  # deferred, ephemeral
    assert edits[0].content.startswith("Queued: next in line")
    assert edits[0].allowed_mentions == NO_MENTIONS
    [cancel] = edits[0].json["components"][0]["components"]
    assert cancel["label"] == "Cancel" and cancel["custom_id"].startswith("gouache:cancel:")

    await fake.slash_command("imagine", {}, payload=payload)  # Discord re-sends the event
    await wait_edits(fake, payload["token"], 2)
    assert [c.status for c in fake.calls if c.path.endswith("/callback")] == [200, 400]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "/callback" in logged and payload["token"] not in logged  # redacted, even at DEBUG
    jobs = await bot.jobs()
    assert len(jobs) == 1
    request = jobs[0].request
    assert request.prompt == "a red cube @everyone" and request.steps == 5
    assert request.origin.request_id == payload["id"]
    assert request.origin.reply_token == payload["token"]


async def test_bad_option_gets_a_specific_ephemeral_error(bot: Bot) -> None:
    with pytest.raises(OptionRejected, match="outside 1..60"):  # Discord's own UI stops this
        await bot.fake.slash_command("imagine", {"prompt": "a cube", "steps": 500})
    payload = await bot.fake.slash_command(
        "imagine", {"prompt": "a cube", "width": 2048, "height": 2048}
    )
    edits = await wait_edits(bot.fake, payload["token"])
    assert edits[0].content.startswith("Size 2048x2048 is too large")
    assert edits[0].allowed_mentions == NO_MENTIONS
    assert bot.fake.find("POST", "/callback")[0].json["data"] == {"flags": 64}
    assert await bot.jobs() == []


async def test_delivery_posts_files_with_mentions_disabled(bot: Bot) -> None:
    fake = bot.fake
    payload = await fake.slash_command("imagine", {"prompt": "<@123> a cube @everyone"})
    await wait_edits(fake, payload["token"])
    [job] = await bot.jobs()
    await bot.finish(job, gif=True)
    assert await Delivery(bot.storage, {"discord": bot.client}).deliver_pending() == 1

    [post] = fake.find("POST", f"/webhooks/{fake.application_id}/{payload['token']}")
    assert post.allowed_mentions == NO_MENTIONS
    assert [name for name, _ in post.files] == ["image-0.png", "denoise-0.gif"]
    assert "a cube @\u200beveryone" in post.content and f"seed {job.request.seed}" in post.content
    ids = [c["custom_id"] for row in post.json["components"] for c in row["components"]]
    assert ids == [f"gouache:{a}:{job.id}" for a in ("reroll", "variations", "gif", "diversify")] + [
        f"gouache:{a}.0:{job.id}" for a in ("upscale", "vary-subtle", "vary-strong")]  # U and V per image


async def test_upload_too_large_degrades_to_fewer_files(bot: Bot) -> None:
    fake = bot.fake
    payload = await fake.slash_command("imagine", {"prompt": "a cube", "gif": True})
    await wait_edits(fake, payload["token"])
    [job] = await bot.jobs()
    await bot.finish(job, gifs=[gif()])
    fake.fail_next("POST", f"/webhooks/{fake.application_id}/", 413)
    assert await Delivery(bot.storage, {"discord": bot.client}).deliver_pending() == 1
    posts = fake.find("POST", f"/webhooks/{fake.application_id}/{payload['token']}")
    assert [name for name, _ in posts[-1].files] == ["image-0.webp", "denoise-0.gif"]


async def test_rate_limited_post_is_retried(bot: Bot) -> None:
    fake = bot.fake
    payload = await fake.slash_command("imagine", {"prompt": "a cube"})
    await wait_edits(fake, payload["token"])
    [job] = await bot.jobs()
    await bot.finish(job)
    fake.fail_next("POST", f"/webhooks/{fake.application_id}/", 429, retry_after=0.05)
    assert await Delivery(bot.storage, {"discord": bot.client}).deliver_pending() == 1
    attempts = [c for c in fake.calls if c.method == "POST" and "/webhooks/" in c.path]
    assert [c.status for c in attempts] == [429, 200]


async def test_after_fourteen_minutes_results_go_to_the_channel(bot: Bot) -> None:
    fake = bot.fake
    payload = await fake.slash_command("imagine", {"prompt": "slow one"}, age=14.5 * 60)
    await wait_edits(fake, payload["token"])
    [job] = await bot.jobs()
    await bot.finish(job)
    assert await Delivery(bot.storage, {"discord": bot.client}).deliver_pending() == 1
    [post] = fake.find("POST", f"/channels/{payload['channel_id']}/messages")
    assert post.allowed_mentions == NO_MENTIONS
    assert [name for name, _ in post.files] == ["image-0.png"]
    assert not fake.find("POST", f"/webhooks/{fake.application_id}/{payload['token']}")


async def test_reroll_button_creates_a_new_job_with_a_new_seed(bot: Bot) -> None:
    fake = bot.fake
    payload = await fake.slash_command("imagine", {"prompt": "a cube", "seed": 7})
    await wait_edits(fake, payload["token"])
    [job] = await bot.jobs()
    press = await fake.press_button(f"gouache:reroll:{job.id}", user_id="300000000000000002")
    edits = await wait_edits(fake, press["token"])
    assert edits[0].content.startswith("Queued: #2 in line")
    jobs = {j.id: j for j in await bot.jobs()}
    assert len(jobs) == 2
    [new] = [j for j in jobs.values() if j.id != job.id]
    assert new.request.prompt == "a cube" and new.request.seed != 7
    assert new.request.origin.user == "300000000000000002"
    assert new.request.origin.request_id == press["id"]


async def test_cancel_button_only_for_the_owner(bot: Bot) -> None:
    fake = bot.fake
    payload = await fake.slash_command("imagine", {"prompt": "a cube"})
    await wait_edits(fake, payload["token"])
    [job] = await bot.jobs()
    other = await fake.press_button(f"gouache:cancel:{job.id}", user_id="300000000000000009")
    assert (await wait_edits(fake, other["token"]))[
        0
    ].content == "You can only cancel your own jobs."
    mine = await fake.press_button(f"gouache:cancel:{job.id}")
    assert (await wait_edits(fake, mine["token"]))[0].content == "Cancelled."
    assert (await bot.storage.get_job(job.id)).status.value == "cancelled"
    again = await fake.press_button(f"gouache:cancel:{job.id}")
    assert (await wait_edits(fake, again["token"]))[0].content == "That job has already finished."


async def test_progress_edits_are_throttled(bot: Bot) -> None:
    fake = bot.fake
    payload = await fake.slash_command("imagine", {"prompt": "a cube"})
    await wait_edits(fake, payload["token"])
    [job] = await bot.jobs()
    for fraction in (0.1, 0.2, 0.3):
        await bot.client.show_progress(Progress(job=job, fraction=fraction))
    edits = original_edits(fake, payload["token"])
    assert [e.content for e in edits[1:]] == ["Generating… 10%"]
    assert edits[-1].allowed_mentions == NO_MENTIONS


async def test_unknown_job_button_and_depth_upload(bot: Bot) -> None:
    fake = bot.fake
    press = await fake.press_button("gouache:reroll:00000000-0000-0000-0000-000000000000")
    assert (await wait_edits(fake, press["token"]))[0].content.startswith("No job with id")
    attachment = fake.attachment("depth.png", png("red"))  # a photo: flat grey maps are refused
    payload = await fake.slash_command(
        "depth",
        {"prompt": "a hill", "image": attachment["id"]},
        attachments={attachment["id"]: attachment},
    )
    assert (await wait_edits(fake, payload["token"]))[0].content.startswith("Queued")
    [job] = await bot.jobs()
    assert job.request.kind.value == "depth" and job.request.attachment == "input-0.png"
    [upload] = await bot.storage.artifacts(job.id)
    assert upload.kind is ArtifactKind.INPUT and upload.data == png("red")


async def test_service_seam_starts_and_stops_the_client(fake: FakeDiscord, tmp_path: Path) -> None:
    from contextlib import AsyncExitStack

    from gouache.bot.adapters.discord import client as discord_adapter
    from gouache.bot.moderation import ModeratedAdmission, PromptFilter

    settings = make_settings(tmp_path, fake)
    async with open_storage(f"sqlite:///{tmp_path / 'queue.db'}") as storage:
        admission = ModeratedAdmission(
            PromptFilter(settings.moderation), Admission(storage, settings)
        )
        async with AsyncExitStack() as stack:
            client = await discord_adapter.open_adapter(
                adapter_deps(settings, storage, admission), stack
            )
            await asyncio.wait_for(client.wait_until_ready(), 15)
            payload = await fake.slash_command("imagine", {"prompt": "a cube"})
            assert (await wait_edits(fake, payload["token"]))[0].content.startswith("Queued")
        assert client.is_closed()


async def test_failed_job_is_reported_to_its_owner_only(bot: Bot) -> None:
    fake = bot.fake
    payload = await fake.slash_command("imagine", {"prompt": "a cube"})
    await wait_edits(fake, payload["token"])
    [job] = await bot.jobs()
    await bot.storage.claim_batch("worker-1", 8, 60.0)
    await bot.storage.fail(job.id, "worker-1", "The GPU ran out of memory.")
    assert await Delivery(bot.storage, {"discord": bot.client}).deliver_pending() == 1
    [post] = fake.find("POST", f"/webhooks/{fake.application_id}/{payload['token']}")
    assert post.json["flags"] == 64 and post.allowed_mentions == NO_MENTIONS
    assert post.content.startswith("The GPU ran out of memory.")
    assert post.files == []


async def test_gouache_service_runs_both_chat_adapters(fake: FakeDiscord, tmp_path: Path) -> None:
    """`gouache run`'s composition root with Discord and Slack configured against the fakes."""
    import socket

    from gouache.config import SlackSettings
    from gouache.service import serve
    from tests.fakes.fake_slack import FakeSlack, SlackSender

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with FakeSlack() as slack:
        settings = make_settings(tmp_path, fake).model_copy(
            update={"port": port, "slack": SlackSettings(
                bot_token=slack.bot_token, signing_secret="s3cret", api_base=slack.api_base)}
        )  # fmt: skip
        stop = asyncio.Event()
        service = asyncio.create_task(serve(settings, stop=stop, spawn_worker=False))
        try:
            await asyncio.wait_for(fake.identified.wait(), 30)
            payload = await fake.slash_command("imagine", {"prompt": "a cube"})
            assert (await wait_edits(fake, payload["token"]))[0].content.startswith("Queued")
            sender = SlackSender(f"http://127.0.0.1:{port}/slack/events", "s3cret", slack)
            assert (await sender.command("/imagine", "a sphere"))["status"] == 200
            await slack.wait_for(lambda f: f.find("response"))
            assert slack.find("response")[0].args["text"].startswith("Queued: #2")
        finally:
            stop.set()
            assert await asyncio.wait_for(service, 30) == 0

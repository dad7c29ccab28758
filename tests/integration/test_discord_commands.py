"""/queue, /cancel, the /gouache admin group, autocomplete and options, against the fake."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gouache import messages
from gouache.config import Admission as AdmissionSettings
from gouache.config import ModelSpec
from gouache.storage import JobStatus
from tests.fakes.fake_discord import FakeDiscord, OptionRejected
from tests.support.discord_bot import NO_MENTIONS, Bot, png, running_bot, wait_edits

ALICE, BOB, ADMIN = "300000000000000001", "300000000000000002", "300000000000000099"
ADMIN_ROLE = "700000000000000001"


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


def _admission(**changes: object) -> AdmissionSettings:
    fields: dict[str, object] = dict(rate_per_minute=600, burst=50, max_pending_per_user=50,
                                     admin_users=[ADMIN], admin_roles=[ADMIN_ROLE])  # fmt: skip
    return AdmissionSettings(**{**fields, **changes})


@pytest.fixture
async def bot(fake: FakeDiscord, tmp_path: Path) -> AsyncIterator[Bot]:
    models = {f"model-{i:02d}": ModelSpec(path="builtin:tiny", label=f"test {i}") for i in range(30)}
    async with running_bot(fake, tmp_path, admission=_admission(), models=models) as running:
        yield running


async def _reply(bot: Bot, name: str, options: dict, **kw: object) -> str:
    _, edits = await bot.command(name, options, **kw)
    assert all(e.allowed_mentions == NO_MENTIONS for e in edits)
    return edits[-1].content or ""


async def test_autocomplete_filters_models_and_samplers_by_typed_text(bot: Bot) -> None:
    fake = bot.fake
    everything = await fake.autocomplete("imagine", {"prompt": "x", "model": ""}, "model")
    assert len(everything) == 25  # Discord's cap on one answer...
    last = await fake.autocomplete("imagine", {"prompt": "x", "model": "model-29"}, "model")
    assert [c["value"] for c in last] == ["model-29"]  # ...but nothing is out of reach
    twenties = await fake.autocomplete("imagine", {"prompt": "x", "model": "model-2"}, "model")
    assert [c["value"] for c in twenties] == [f"model-2{i}" for i in range(10)]
    assert twenties[0]["name"] == "model-20 — test 20"
    samplers = await fake.autocomplete("depth", {"prompt": "x", "sampler": "EUL"}, "sampler")
    assert {"euler", "euler-a"} <= {c["value"] for c in samplers}
    assert all("eul" in c["value"] for c in samplers)


async def test_queue_shows_my_jobs_with_position_eta_and_cancel_buttons(bot: Bot) -> None:
    await _reply(bot, "imagine", {"prompt": "first of mine"}, user_id=ALICE)
    await _reply(bot, "imagine", {"prompt": "one of bob's"}, user_id=BOB)
    await _reply(bot, "imagine", {"prompt": "second [x](https://evil) of mine"}, user_id=ALICE)
    _, edits = await bot.command("queue", {}, user_id=ALICE)
    text = edits[-1].content
    assert text.splitlines()[0] == "Your requests:"
    assert "#1 in line, about" in text and "“first of mine”" in text
    assert "#3 in line" in text and "\\[x](https://evil)" in text and "bob" not in text
    buttons = [c for row in edits[-1].json["components"] for c in row["components"]]
    mine = {j.id for j in await bot.jobs() if j.user == ALICE}
    assert {b["custom_id"].split(":")[2] for b in buttons} == mine
    assert all(b["custom_id"].startswith("gouache:cancel:") for b in buttons)
    assert buttons[0]["label"].startswith("Cancel #1: first of mine")

    press = await bot.fake.press_button(buttons[0]["custom_id"], user_id=ALICE)
    assert (await wait_edits(bot.fake, press["token"]))[0].content == "Cancelled."
    assert await _reply(bot, "queue", {}, user_id="300000000000000077") == messages.nothing_queued()


async def test_cancel_takes_the_newest_or_the_one_picked_by_autocomplete(bot: Bot) -> None:
    await _reply(bot, "imagine", {"prompt": "older"}, user_id=ALICE)
    await _reply(bot, "imagine", {"prompt": "newer"}, user_id=ALICE)
    assert await _reply(bot, "cancel", {}, user_id=ALICE) == "Cancelled."
    status = {j.request.prompt: j.status for j in await bot.jobs()}
    assert status == {"older": JobStatus.QUEUED, "newer": JobStatus.CANCELLED}

    choices = await bot.fake.autocomplete("cancel", {"job": "old"}, "job", user_id=ALICE)
    [older] = [j for j in await bot.jobs() if j.request.prompt == "older"]
    assert choices == [{"name": "#1: older", "value": older.id}]
    assert await bot.fake.autocomplete("cancel", {"job": ""}, "job", user_id=BOB) == []
    assert await _reply(bot, "cancel", {"job": older.id}, user_id=BOB) == messages.not_your_job()
    assert await _reply(bot, "cancel", {"job": older.id}, user_id=ALICE) == "Cancelled."
    assert await _reply(bot, "cancel", {}, user_id=ALICE) == messages.nothing_to_cancel()


@pytest.mark.parametrize("command", ["pause", "resume", "reset-limits", "usage"])
async def test_admin_commands_are_refused_to_non_admins(bot: Bot, command: str) -> None:
    options = {"user": BOB} if command == "reset-limits" else {}
    reply = await _reply(bot, f"gouache {command}", options, user_id=ALICE, roles=["1234"])
    assert reply == messages.admin_only()  # Discord's default_permissions let them: we do not
    assert await bot.storage.get_flag("paused") is None


async def test_pause_refuses_new_work_while_running_work_finishes(bot: Bot) -> None:
    await _reply(bot, "imagine", {"prompt": "already running"}, user_id=ALICE)
    [running] = await bot.jobs()
    await bot.storage.claim_batch("worker-1", 8, 60.0)
    reply = await _reply(bot, "gouache pause", {}, user_id=BOB, roles=[ADMIN_ROLE])  # by role
    assert reply == messages.paused()
    assert await _reply(bot, "imagine", {"prompt": "new"}, user_id=ALICE) == messages.queue_paused()
    assert await _reply(bot, "gouache pause", {}, user_id=ADMIN) == messages.already_paused()
    await bot.finish(running)
    assert await bot.deliver() == 1  # running work still finishes and is delivered
    assert await _reply(bot, "gouache resume", {}, user_id=ADMIN) == messages.resumed()
    assert (await _reply(bot, "imagine", {"prompt": "new"}, user_id=ALICE)).startswith("Queued")
    assert await _reply(bot, "gouache resume", {}, user_id=ADMIN) == messages.not_paused()


async def test_reset_limits_gives_a_user_their_burst_back(fake: FakeDiscord, tmp_path: Path) -> None:
    admission = _admission(rate_per_minute=0.01, burst=1)
    async with running_bot(fake, tmp_path, admission=admission) as bot:
        assert (await _reply(bot, "imagine", {"prompt": "one"}, user_id=ALICE)).startswith("Queued")
        refused = await _reply(bot, "imagine", {"prompt": "two"}, user_id=ALICE)
        assert refused.startswith("You're sending requests faster than allowed")
        reply = await _reply(bot, "gouache reset-limits", {"user": ALICE}, user_id=ADMIN)
        assert reply == f"Rate limit reset for <@{ALICE}>."
        assert (await _reply(bot, "imagine", {"prompt": "two"}, user_id=ALICE)).startswith("Queued")
        again = await _reply(bot, "gouache reset-limits", {"user": BOB}, user_id=ADMIN)
        assert again == f"<@{BOB}> had no rate limit to reset."


async def test_usage_counts_jobs_and_image_steps_per_user_and_guild(bot: Bot) -> None:
    await _reply(bot, "imagine", {"prompt": "a", "steps": 10, "count": 2}, user_id=ALICE)
    await _reply(bot, "imagine", {"prompt": "b", "steps": 5}, user_id=ALICE)
    await _reply(bot, "imagine", {"prompt": "c", "steps": 4}, user_id=BOB)
    report = await _reply(bot, "gouache usage", {}, user_id=ADMIN)
    lines = report.splitlines()
    assert lines[0] == "Usage over the last 24 h:"
    assert lines[1] == f"- <@{ALICE}>: 2 job(s), 25 image-steps"
    assert lines[2] == f"- <@{BOB}>: 1 job(s), 4 image-steps"
    assert lines[3] == "- discord guild 500000000000000001 (all users): 3 job(s), 29 image-steps"


async def test_hostile_prompt_is_echoed_harmlessly(bot: Bot) -> None:
    fake = bot.fake
    prompt = "@everyone <@&123> [x](https://evil) **bold**"
    payload, _ = await bot.command("imagine", {"prompt": prompt}, user_id=ALICE)
    [job] = await bot.jobs()
    await bot.finish(job)
    assert await bot.deliver() == 1
    [post] = fake.find("POST", f"/webhooks/{fake.application_id}/{payload['token']}")
    assert "@\u200beveryone" in post.content and "@everyone" not in post.content
    assert "\\[x](https://evil)" in post.content and "\\*\\*bold\\*\\*" in post.content
    assert "<@&123>" in post.content  # shown, and pings no one: mentions are off on every call
    sent = [c for c in fake.calls if c.method in {"POST", "PATCH"} and c.content is not None]
    assert sent and all(c.allowed_mentions == NO_MENTIONS for c in sent)


async def test_depth_takes_strength_within_its_range(bot: Bot) -> None:
    attachment = bot.fake.attachment("depth.png", png("red"))  # a photo: flat grey maps are refused
    with pytest.raises(OptionRejected, match="strength"):
        await bot.fake.slash_command("depth", {"prompt": "a hill", "image": attachment["id"],
                                               "strength": 2.5},
                                     attachments={attachment["id"]: attachment})  # fmt: skip
    reply = await _reply(bot, "depth", {"prompt": "a hill", "image": attachment["id"],
                                        "strength": 0.5, "steps": 7},
                         attachments={attachment["id"]: attachment})  # fmt: skip
    assert reply.startswith("Queued")
    [job] = await bot.jobs()
    assert job.request.strength == 0.5 and job.request.steps == 7


async def test_variations_button_asks_for_four_images_around_the_seed(bot: Bot) -> None:
    await _reply(bot, "imagine", {"prompt": "a cube", "seed": 7}, user_id=ALICE)
    [job] = await bot.jobs()
    press = await bot.fake.press_button(f"gouache:variations:{job.id}", user_id=BOB)
    assert (await wait_edits(bot.fake, press["token"]))[0].content.startswith("Queued")
    [new] = [j for j in await bot.jobs() if j.id != job.id]
    assert (new.request.count, new.request.seed, new.user) == (4, 8, BOB)
    assert [new.request.image_seed(i) for i in range(4)] == [8, 9, 10, 11]


async def test_buttons_work_after_a_restart(fake: FakeDiscord, tmp_path: Path) -> None:
    from gouache.storage import open_storage

    async with open_storage(f"sqlite:///{tmp_path / 'queue.db'}") as storage:
        async with running_bot(fake, tmp_path, storage) as first:
            payload, _ = await first.command("imagine", {"prompt": "a cube", "seed": 3})
            [job] = await first.jobs()
            await first.finish(job)
            assert await first.deliver() == 1
        [post] = fake.find("POST", f"/webhooks/{fake.application_id}/{payload['token']}")
        message_id = next(k for k, m in fake.messages.items()
                          if m["content"] == post.content and k.isdigit())  # fmt: skip
        async with running_bot(fake, tmp_path, storage) as second:  # a new process, same queue
            press = await fake.press_button(f"gouache:reroll:{job.id}", message_id=message_id)
            assert (await wait_edits(fake, press["token"]))[0].content.startswith("Queued")
            assert len(await second.jobs()) == 2


async def test_invite_link_is_logged_at_start(
    fake: FakeDiscord, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from gouache.bot.adapters.discord.client import invite_permissions

    caplog.set_level(logging.INFO, logger="gouache")
    async with running_bot(fake, tmp_path):
        pass
    [line] = [r.getMessage() for r in caplog.records if "oauth2/authorize" in r.getMessage()]
    assert f"client_id={fake.application_id}" in line
    assert "scope=bot+applications.commands" in line
    value = invite_permissions().value
    assert f"permissions={value}" in line and value == 1 << 38 | 0x400 | 0x800 | 0x4000 | 0x8000


async def test_loras_autocomplete_past_25_list_and_reach_the_request(fake: FakeDiscord, tmp_path: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    folder = tmp_path / "loras"
    folder.mkdir()
    for i in range(30):  # more than one autocomplete answer holds
        save_file({"lora_unet_x_attn2_to_k.lora_down.weight": np.zeros((2, 768), np.float32)},
                  str(folder / f"look-{i:02d}.safetensors"))  # fmt: skip
    styles = {"poster": {"prompt": "{prompt}, poster", "description": "flat colours"}}
    async with running_bot(fake, tmp_path, admission=_admission(), loras_dir=folder, styles=styles) as bot:
        first = await fake.autocomplete("imagine", {"prompt": "x", "lora": ""}, "lora")
        assert len(first) == 25
        last = await fake.autocomplete("imagine", {"prompt": "x", "lora": "look-00:0.5 look-29"}, "lora")
        assert [c["value"] for c in last] == ["look-00:0.5 look-29"]
        style = await fake.autocomplete("diversity", {"prompt": "x", "style": "po"}, "style")
        assert [c["value"] for c in style] == ["poster"]
        listed = await _reply(bot, "loras", {})
        assert "`look-29` (default 1)" in listed and "`poster`: flat colours" in listed
        await _reply(bot, "imagine", {"prompt": "a fox", "lora": "look-03:0.5 look-07", "style": "poster"})
        (job,) = await bot.jobs()
        assert job.request.loras == (("look-03", 0.5), ("look-07", 1.0))
        assert job.request.text == "a fox, poster"
        refused = await _reply(bot, "imagine", {"prompt": "a fox", "lora": "lok-03"})
        assert refused.startswith("Unknown LoRA 'lok-03'. Did you mean look-03")


async def test_autocomplete_and_help_offer_only_what_the_chosen_model_takes(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    from gouache.generation.loop.samplers import samplers_of_kind

    models = {
        "sd15": ModelSpec(path="/models/sd15", family="sd", depth_controlnet="/models/cn-depth"),
        "sdxl": ModelSpec(path="/models/sdxl", family="sdxl"),
        "flux-dev": ModelSpec(path="black-forest-labs/FLUX.1-dev", family="flux"),
        "flux-schnell": ModelSpec(path="black-forest-labs/FLUX.1-schnell", family="flux"),
    }
    async with running_bot(fake, tmp_path, admission=_admission(), models=models,
                           default_model="sd15") as bot:  # fmt: skip
        async def samplers(command: str, model: str | None) -> list[str]:
            typed = {"prompt": "x", "sampler": ""} | ({"model": model} if model else {})
            return [c["value"] for c in await fake.autocomplete(command, typed, "sampler")]

        flow, eps = samplers_of_kind("flow"), samplers_of_kind("eps")
        assert sorted(await samplers("imagine", "flux-dev")) == sorted(flow)
        assert sorted(await samplers("diversity", "flux-schnell")) == sorted(flow)
        assert sorted(await samplers("imagine", None)) == sorted(eps)  # the default model: sd15
        labelled = await fake.autocomplete("imagine", {"prompt": "x", "model": "flux-dev", "sampler": "flow"}, "sampler")
        assert "flow-euler (default)" in {c["name"] for c in labelled}
        # /depth offers only the models with a depth ControlNet; /imagine offers every one
        depth = await fake.autocomplete("depth", {"prompt": "x", "model": ""}, "model")
        assert {c["value"] for c in depth} == {"sd15", "builtin:demo", "builtin:tiny"}  # not sdxl, flux
        everything = await fake.autocomplete("imagine", {"prompt": "x", "model": ""}, "model")
        assert {"sd15", "sdxl", "flux-dev", "flux-schnell"} <= {c["value"] for c in everything}
        helped = await fake.autocomplete("help", {"model": "flux"}, "model")
        assert [c["value"] for c in helped] == ["flux-dev", "flux-schnell"]

        schnell = await _reply(bot, "help", {"model": "flux-schnell"})
        assert "flux-schnell takes no guidance: no `--cfg`." in schnell
        assert "flow-euler, flow-euler-karras, flow-euler-exponential, flow-euler-beta" in schnell and "euler-a" not in schnell
        assert "`/depth`" not in schnell and "`--no " not in schnell
        default = await _reply(bot, "help", {})
        assert default.startswith("**gouache with sd15**") and "`/depth`" in default
        assert "`--cfg 7`: CFG scale" in default and "euler-a" in default
        assert (await _reply(bot, "help", {"model": "nope"})).startswith("Unknown model “nope”")
        # what autocomplete leaves out is refused at admission, with the reason
        refused = await _reply(bot, "imagine", {"prompt": "a fox", "model": "flux-dev", "sampler": "euler-a"})
        assert "does not apply to flux-dev" in refused and "flow-euler" in refused
        assert await bot.jobs() == []

"""/help and /loras on Slack (slash commands and @mentions), through the real bolt app and the
fake Slack: each lists only what the model named takes, and queues nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from gouache.storage import open_storage
from tests.fakes.slack_app import SlackApp, slack_app


def _config(tmp_path: Path) -> dict:
    folder = tmp_path / "loras"
    folder.mkdir()
    save_file({"lora_unet_x_attn2_to_k.lora_down.weight": np.zeros((2, 768), np.float32)},
              str(folder / "crisp.safetensors"))  # an SD 1.x LoRA (its keys say so)  # fmt: skip
    return {
        "default_model": "sd15",
        "models": {
            "sd15": {"path": "/models/sd15", "family": "sd", "depth_controlnet": "/models/cn-depth"},
            "flux-dev": {"path": "black-forest-labs/FLUX.1-dev", "family": "flux"},
            "flux-schnell": {"path": "black-forest-labs/FLUX.1-schnell", "family": "flux"},
        },
        "loras_dir": folder,
        "styles": {"poster": {"prompt": "{prompt}, poster", "description": "flat & bold"}},
    }


@pytest.fixture(params=["http", "socket"])
async def app(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SlackApp]:
    async with open_storage(f"sqlite:///{tmp_path / 'q.db'}") as storage, slack_app(
        storage, tmp_path, mode=request.param, config=_config(tmp_path)
    ) as harness:  # fmt: skip
        yield harness


async def _answer(app: SlackApp, command: str, text: str) -> str:
    before = len(app.fake.find("response"))
    await app.slack.command(command, text)
    replies = await app.replies(before + 1)
    assert replies[before]["response_type"] == "ephemeral"
    return str(replies[before]["text"])


async def test_help_lists_only_the_named_models_options(app: SlackApp) -> None:
    schnell = await _answer(app, "/help", "flux-schnell")
    assert schnell.startswith("*gouache with flux-schnell* (flux)")  # Slack's bold
    assert "flow-euler, flow-euler-karras, flow-euler-exponential, flow-euler-beta (default flow-euler)" in schnell
    assert "euler-a" not in schnell and "`/depth`" not in schnell and "`--no " not in schnell
    assert "flux-schnell takes no guidance: no `--cfg`." in schnell
    dev = await _answer(app, "/help", "--model flux-dev")
    assert "`--cfg 3.5`: distilled guidance" in dev and "`--sampler flow-euler`" in dev
    default = await _answer(app, "/help", "")
    assert default.startswith("*gouache with sd15* (sd)") and "`/depth`: generate following" in default
    assert "`--cfg 7`: CFG scale" in default and "dpmpp-2m-karras" in default and "flow-euler" not in default
    assert "`--lora NAME:0.8`, `--no-trigger`: LoRAs (crisp; /loras lists them)" in default
    assert "`--lora" not in dev  # the SD LoRA does not apply to Flux
    assert await _answer(app, "/help", "nope") == "Unknown model “nope”. Available models: " + ", ".join(
        sorted(app.settings.models)) + "."  # fmt: skip
    assert await app.jobs() == []


async def test_loras_lists_what_applies_to_the_model(app: SlackApp) -> None:
    listed = await _answer(app, "/loras", "")
    assert listed.startswith("*LoRAs for sd15* (`--lora NAME:SCALE`)")
    assert "`crisp` (default 1)" in listed and "`poster`: flat &amp; bold" in listed  # escaped
    flux = await _answer(app, "/loras", "flux-dev")
    assert "crisp" not in flux and "`poster`" in flux
    assert await _answer(app, "/loras", "sd15 --steps 3") == "/loras takes a model name at most, like /loras --model NAME."
    assert await app.jobs() == []


async def test_a_mention_asks_for_help_and_a_prompt_starting_with_help_is_a_prompt(app: SlackApp) -> None:
    await app.slack.mention("<@UBOT> help flux-dev")
    told = await app.fake.wait_for(lambda f: f.find("chat.postEphemeral"))
    assert "*gouache with flux-dev* (flux)" in told[0].args["text"]
    assert "distilled guidance" in told[0].args["text"]
    await app.slack.mention("<@UBOT> help me draw a lighthouse")
    [job] = await app.wait_jobs(1)
    assert job.request.prompt == "help me draw a lighthouse"

"""/help lists only what each model takes; /depth without a depth ControlNet is refused at
admission; --cfg is named for what it is (CFG, distilled guidance, none) in the caption and the
PNG parameters."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image

from gouache.bot.adapter import Result
from gouache.bot.captions import result_text
from gouache.bot.commands import build_request, listing_model, parse_listing, parse_text
from gouache.bot.listings import answer, data, model_options
from gouache.config import Settings
from gouache.errors import InvalidRequest
from gouache.generation.loop.samplers import samplers_of_kind
from gouache.request import Listing, Origin
from gouache.storage.jobs import Job, JobStatus

ORIGIN = Origin(platform="web", request_id="r1", user="u1")
EPS, FLOW = samplers_of_kind("eps"), samplers_of_kind("flow")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, default_model="sd15", models={
        "sd15": {"path": "/models/sd15", "family": "sd", "depth_controlnet": "/models/cn-depth"},
        "sdxl": {"path": "/models/sdxl", "family": "sdxl"},
        "flux-dev": {"path": "black-forest-labs/FLUX.1-dev", "family": "flux"},
        "flux-schnell": {"path": "black-forest-labs/FLUX.1-schnell", "family": "flux"},
        "z-turbo": {"path": "Tongyi-MAI/Z-Image-Turbo", "family": "z-image"},
        "sd35": {"path": "/models/sd35", "family": "sd3"},
    })  # fmt: skip


def test_each_model_lists_its_own_samplers_guidance_and_commands(settings: Settings) -> None:
    seen = {name: model_options(settings, name) for name in settings.models}
    assert seen["sd15"].samplers == seen["sdxl"].samplers == EPS
    assert all(seen[name].samplers == FLOW for name in ("flux-dev", "flux-schnell", "z-turbo", "sd35"))
    assert {name: o.guidance for name, o in seen.items()} == {
        "sd15": "cfg", "sdxl": "cfg", "flux-dev": "distilled", "flux-schnell": "none",
        "z-turbo": "cfg", "sd35": "cfg", "builtin:tiny": "cfg", "builtin:demo": "cfg"}  # fmt: skip
    assert (seen["z-turbo"].steps, seen["z-turbo"].cfg) == (8, 0.0)  # Turbo: CFG off
    assert (seen["flux-schnell"].steps, seen["flux-dev"].cfg) == (4, 3.5)
    # /depth only where a depth ControlNet is configured; /edit nowhere (no editing model)
    assert "/depth" in seen["sd15"].commands and "--input" in seen["sd15"].flags
    assert "/depth" not in seen["sdxl"].commands and "--input" not in seen["sdxl"].flags
    assert not any("/edit" in o.commands for o in seen.values())
    assert all({"/help", "/loras"} <= set(o.commands) for o in seen.values())
    # no --cfg without guidance, no --no without a negative pass
    assert "--cfg" not in seen["flux-schnell"].flags and "--cfg" in seen["flux-dev"].flags
    assert "--no" not in seen["flux-dev"].flags and "--no" in seen["sd35"].flags
    assert "--lora" not in seen["sd15"].flags and "--style" not in seen["sd15"].flags  # none configured


def test_help_text_names_only_the_models_options(settings: Settings) -> None:
    schnell = answer(Listing.HELP, settings, "flux-schnell")
    assert "flow-euler, flow-euler-karras, flow-euler-exponential, flow-euler-beta (default flow-euler)" in schnell
    assert "euler-a" not in schnell and "ddim" not in schnell
    assert "flux-schnell takes no guidance: no `--cfg`." in schnell
    assert "`--no " not in schnell and "`/depth`" not in schnell and "`/edit`" not in schnell
    dev = answer(Listing.HELP, settings, "flux-dev")
    assert "`--cfg 3.5`: distilled guidance" in dev and "CFG scale" not in dev
    sd = answer(Listing.HELP, settings, "sd15")
    assert "`--cfg 7`: CFG scale" in sd and "`/depth`: generate following" in sd
    assert "dpmpp-2m-karras" in sd and "flow-euler" not in sd and "`--no blurry, text`" in sd
    web = data(Listing.HELP, settings, "z-turbo")
    assert (tuple(web["samplers"]), web["guidance"], web["cfg"], web["steps"]) == (FLOW, "cfg", 0.0, 8)
    assert web["text"] == answer(Listing.HELP, settings, "z-turbo")


def test_listing_commands_take_a_model_at_most(settings: Settings) -> None:
    assert parse_listing("/help flux-dev") == (Listing.HELP, "flux-dev")
    assert parse_listing("/loras --model sdxl") == (Listing.LORAS, "--model sdxl")
    assert parse_listing("help") is None  # typed alone in chat: a prompt...
    assert parse_listing("help", bare=True) == (Listing.HELP, "")  # ...but "@gouache help" asks
    assert parse_listing("help me draw a cat", bare=True) is None  # a prompt
    assert listing_model(Listing.HELP, "FLUX-DEV", settings) == "flux-dev"
    assert listing_model(Listing.LORAS, "--model sdxl", settings) == "sdxl"
    assert listing_model(Listing.HELP, "", settings) == "sd15"
    with pytest.raises(InvalidRequest, match="Unknown model “nope”"):
        listing_model(Listing.HELP, "nope", settings)
    with pytest.raises(InvalidRequest, match="/help takes a model name at most"):
        listing_model(Listing.HELP, "sd15 --steps 3", settings)


def test_depth_without_a_depth_controlnet_is_refused_at_admission(settings: Settings) -> None:
    with pytest.raises(InvalidRequest, match="'sdxl' has no depth ControlNet configured"):
        build_request(parse_text("/depth a hill --model sdxl"), ORIGIN, settings)
    assert build_request(parse_text("/depth a hill"), ORIGIN, settings).model == "sd15"
    with pytest.raises(InvalidRequest, match="flow-matching model"):  # and the sampler rule holds
        build_request(parse_text("a fox --model z-turbo --sampler euler-a"), ORIGIN, settings)


def _parameters(request) -> str:  # noqa: ANN001
    from gouache.worker.jobs import image_parameters

    return image_parameters(request, 0)


@pytest.mark.parametrize(("model", "cfg", "caption", "png"), [
    ("flux-dev", "", "distilled guidance 3.5", "Distilled guidance: 3.5"),
    ("flux-dev", "--cfg 2.5", "distilled guidance 2.5", "Distilled guidance: 2.5"),
    ("flux-schnell", "", "no guidance", "Guidance: none"),
    ("sd15", "", "CFG scale 7", "CFG scale: 7"),
    ("z-turbo", "", "CFG scale 0", "CFG scale: 0"),
])  # fmt: skip
def test_the_caption_and_the_png_say_what_cfg_was(
    settings: Settings, model: str, cfg: str, caption: str, png: str
) -> None:
    request = build_request(parse_text(f"a fox --model {model} {cfg}"), ORIGIN, settings)
    now = datetime.now(UTC)
    text = result_text(Result(Job("j1", request, JobStatus.SUCCEEDED, 1, now, now), ()))
    assert f" · {caption} · " in text
    parameters = _parameters(request)
    assert f", {png}, " in parameters
    assert sum(label in parameters for label in ("CFG scale:", "Distilled guidance:", "Guidance:")) == 1
    from gouache.generation.png import encode_png

    read = Image.open(io.BytesIO(encode_png(Image.new("RGB", (8, 8)), parameters))).info["parameters"]
    assert read == parameters
    assert type(request).from_json(request.to_json()).guidance_kind == request.guidance_kind

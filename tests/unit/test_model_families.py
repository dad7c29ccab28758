"""The bot's torch-free family facts: defaults per family, samplers refused with the reason,
what --cfg means in the reply, and the table held to the worker's families."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gouache.config import ModelSpec
from gouache.errors import InvalidRequest
from gouache.model_families import FAMILY_NAMES, facts_for, family_of_pipeline


def _folder(root: Path, pipeline: str, guidance_embeds: bool | None = None) -> Path:
    root.mkdir(parents=True)
    (root / "model_index.json").write_text(json.dumps({"_class_name": pipeline}))
    if guidance_embeds is not None:
        (root / "transformer").mkdir()
        (root / "transformer" / "config.json").write_text(json.dumps({"guidance_embeds": guidance_embeds}))
    return root


def test_family_is_read_from_the_folder_without_torch(tmp_path) -> None:
    dev = facts_for(str(_folder(tmp_path / "dev", "FluxPipeline", True)))
    schnell = facts_for(str(_folder(tmp_path / "schnell", "FluxPipeline", False)))
    assert dev is not None and (dev.name, dev.guidance, dev.steps) == ("flux", "distilled", 28)
    assert schnell is not None and (schnell.guidance, schnell.steps, schnell.cfg) == ("none", 4, 0.0)
    assert facts_for("some/hub-id") is None  # the worker decides when it loads it
    assert facts_for("black-forest-labs/FLUX.1-schnell", "flux").steps == 4


def test_klein_distilled_or_base_is_read_from_the_folder_or_the_name(tmp_path) -> None:
    distilled = _folder(tmp_path / "klein-base-distilled", "Flux2KleinPipeline")  # the file wins
    base = _folder(tmp_path / "klein", "Flux2KleinPipeline")
    for folder, flag in ((distilled, True), (base, False)):
        index = json.loads((folder / "model_index.json").read_text())
        (folder / "model_index.json").write_text(json.dumps({**index, "is_distilled": flag}))
    got = facts_for(str(distilled))
    assert got is not None and (got.name, got.guidance, got.steps, got.negative_prompt) == ("flux2-klein", "none", 4, False)
    got = facts_for(str(base))
    assert got is not None and (got.guidance, got.steps, got.cfg) == ("cfg", 50, 4.0)
    # No folder: the hub's names say which (FLUX.2-klein-4B is distilled, -base- is not).
    assert facts_for("black-forest-labs/FLUX.2-klein-4B", "flux2-klein").steps == 4
    assert facts_for("black-forest-labs/FLUX.2-klein-base-9B", "flux2-klein").guidance == "cfg"


def test_unset_defaults_are_the_familys_and_set_ones_stay(tmp_path) -> None:
    folder = str(_folder(tmp_path / "sd3", "StableDiffusion3Pipeline"))
    spec = ModelSpec(path=folder)
    assert (spec.default_steps, spec.default_guidance, spec.default_sampler) == (28, 4.5, "flow-euler")
    mine = ModelSpec(path=folder, default_steps=40)
    assert mine.default_steps == 40 and mine.default_sampler == "flow-euler"
    assert ModelSpec(path="some/sd-model").default_sampler == "euler-a"  # unchanged for UNets


def test_the_table_agrees_with_the_worker_families() -> None:
    from gouache.generation.families import FAMILIES

    assert set(FAMILY_NAMES) == set(FAMILIES)
    for family in FAMILIES.values():
        for pipeline in family.pipeline_classes:
            assert family_of_pipeline(pipeline) == family.name
        facts = facts_for("", family.name)
        assert facts is not None and facts.sampler_kind == family.sampler_kind


def _settings(tmp_path: Path):
    from gouache.config import Settings

    folder = _folder(tmp_path / "flux", "FluxPipeline", True)
    return Settings(models={"flux": ModelSpec(path=str(folder))}, default_model="flux")


def test_bot_refuses_a_sampler_the_family_cannot_use(tmp_path) -> None:
    from gouache.bot.commands import build_request, parse_text
    from gouache.request import Origin

    settings, origin = _settings(tmp_path), Origin(platform="web", request_id="r1", user="u1")
    with pytest.raises(InvalidRequest, match="flow-matching model.*flow-euler"):
        build_request(parse_text("a cat --sampler ddim"), origin, settings)
    request = build_request(parse_text("a cat --no blur"), origin, settings)
    assert (request.sampler, request.steps, request.guidance) == ("flow-euler", 28, 3.5)
    assert any("distilled guidance" in note and "--no is not used" in note for note in request.notes)


def test_a_distilled_klein_request_says_cfg_and_no_are_unused(tmp_path) -> None:
    from gouache.bot.commands import build_request, parse_text
    from gouache.config import Settings
    from gouache.request import Origin

    folder = _folder(tmp_path / "klein", "Flux2KleinPipeline")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "Flux2KleinPipeline", "is_distilled": True}))
    settings = Settings(models={"klein": ModelSpec(path=str(folder))}, default_model="klein")
    origin = Origin(platform="web", request_id="r1", user="u1")
    request = build_request(parse_text("a cat --no blur --cfg 5"), origin, settings)
    assert (request.sampler, request.steps, request.guidance) == ("flow-euler", 4, 5.0)
    assert any("takes no guidance" in note and "--no is not used" in note for note in request.notes)

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

"""Batch types, the OOM split, and the sampler table."""

from __future__ import annotations

import pytest

from gouache.errors import InvalidRequest
from gouache.generation.loop.batch import BatchItem, BatchKey, ItemResult, split_in_halves
from gouache.generation.loop.samplers import SAMPLERS, make_scheduler

BASE = {
    "_class_name": "DDIMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "timestep_spacing": "leading",
}


@pytest.mark.parametrize(
    ("items", "halves"),
    [([1, 2], ([1], [2])), ([1, 2, 3], ([1, 2], [3])), ([1, 2, 3, 4], ([1, 2], [3, 4]))],
)
def test_split_in_halves(items, halves):
    assert split_in_halves(items) == halves


def test_a_single_item_cannot_be_split():
    with pytest.raises(ValueError):
        split_in_halves(["only"])


def test_batch_types_are_frozen_and_validated():
    key = BatchKey("m", "txt2img", 64, 64, 4, "ddim", 5.0)
    assert key == BatchKey("m", "txt2img", 64, 64, 4, "ddim", 5.0) and hash(key)
    with pytest.raises(AttributeError):
        key.steps = 5  # type: ignore[misc]
    with pytest.raises(ValueError):
        BatchItem("x", "p", count=0)
    with pytest.raises(ValueError):
        BatchItem("x", "p", frames_every=-1)
    assert ItemResult("x").ok and not ItemResult("x", cancelled=True).ok


def test_every_sampler_builds_from_the_models_config():
    assert {
        "ddpm",
        "ddim",
        "pndm",
        "euler",
        "euler-a",
        "dpmpp-2m",
        "dpmpp-2m-karras",
        "unipc",
        "lcm",
    } <= set(SAMPLERS)
    for name in SAMPLERS:
        scheduler = make_scheduler(name, BASE)
        assert scheduler.config.beta_schedule == "scaled_linear"  # the model's betas are kept
        scheduler.set_timesteps(4)


@pytest.mark.parametrize(
    ("name", "cls", "config"),
    [
        ("euler-a", "EulerAncestralDiscreteScheduler", {}),
        (
            "dpmpp-2m",
            "DPMSolverMultistepScheduler",
            {"algorithm_type": "dpmsolver++", "use_karras_sigmas": False},
        ),
        (
            "dpmpp-2m-karras",
            "DPMSolverMultistepScheduler",
            {"use_karras_sigmas": True, "solver_order": 2},
        ),
        ("pndm", "PNDMScheduler", {"skip_prk_steps": True}),
    ],
)
def test_sampler_overrides(name, cls, config):
    scheduler = make_scheduler(name, BASE)
    assert type(scheduler).__name__ == cls
    for field, value in config.items():
        assert scheduler.config[field] == value


def test_unknown_sampler_lists_the_allowed_names():
    with pytest.raises(InvalidRequest) as info:
        make_scheduler("k_lms_plus", BASE)
    assert "“k_lms_plus”" in info.value.message  # the bot's wording: one message for both paths
    assert all(name in info.value.message for name in SAMPLERS)

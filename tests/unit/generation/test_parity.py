"""gouache's own denoising loop against diffusers' pipelines built from the same components.

Tolerance: max abs difference < 1e-4 on [0, 1] float images. With the same batch composition
the SD loop is bit-identical to diffusers (measured 0.0); SDXL compares two diffusers calls
against one gouache batch, so row-batched kernels differ slightly (measured ~2e-6).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from gouache.generation.loop.batch import BatchItem, BatchKey
from gouache.generation.loop.samplers import make_scheduler, samplers_of_kind

TOL = 1e-4
STEPS = 3


def _generators(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]


def _gouache(engine, key: BatchKey, items: list[BatchItem]) -> np.ndarray:
    results = engine.generate(key, items)
    assert all(result.ok for result in results)
    return np.stack([image for result in results for image in result.images])


@pytest.fixture(scope="module")
def sd_pipe(tiny_model_dir):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        tiny_model_dir / "pipeline", local_files_only=True
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("sampler", samplers_of_kind("eps"))
def test_sd_matches_stable_diffusion_pipeline(sampler, sd_pipe, registry, float_engine_cls):
    model = registry.get("builtin:tiny")
    key = BatchKey("builtin:tiny", "txt2img", 64, 64, STEPS, sampler, 5.0)
    items = [
        BatchItem("a", "a red cat", "blurry", seed=7, count=2),
        BatchItem("b", "a blue dog", "", seed=11),
    ]
    ours = _gouache(float_engine_cls(registry), key, items)

    sd_pipe.scheduler = make_scheduler(sampler, model.scheduler_config)
    reference = sd_pipe(
        ["a red cat", "a red cat", "a blue dog"],
        negative_prompt=["blurry", "blurry", ""],
        num_inference_steps=STEPS,
        guidance_scale=5.0,
        height=64,
        width=64,
        generator=_generators(7, 8, 11),
        output_type="np",
    ).images
    assert ours.shape == reference.shape == (3, 64, 64, 3)
    assert np.abs(ours - reference).max() < TOL


@pytest.mark.parametrize("sampler", ["ddim", "euler-a", "dpmpp-2m-karras"])
def test_sdxl_matches_stable_diffusion_xl_pipeline(
    sampler, tiny_xl_model_dir, registry, float_engine_cls
):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(
        tiny_xl_model_dir / "pipeline", local_files_only=True
    )
    pipe.set_progress_bar_config(disable=True)
    model = registry.get("tiny-xl")
    assert model.family.name == "sdxl"
    pipe.scheduler = make_scheduler(sampler, model.scheduler_config)
    key = BatchKey("tiny-xl", "txt2img", 64, 64, STEPS, sampler, 5.0)
    items = [
        BatchItem("a", "a red cat", "blurry", seed=3),
        BatchItem(
            "b", "a blue dog", "", seed=4
        ),  # empty negative: zeros (force_zeros_for_empty_prompt)
    ]
    ours = _gouache(float_engine_cls(registry), key, items)

    common = dict(
        num_inference_steps=STEPS, guidance_scale=5.0, height=64, width=64, output_type="np"
    )
    with_negative = pipe("a red cat", negative_prompt="blurry", generator=_generators(3), **common)
    without_negative = pipe("a blue dog", generator=_generators(4), **common)
    reference = np.concatenate([with_negative.images, without_negative.images])
    assert np.abs(ours - reference).max() < TOL


def _depth_map(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8))  # resized to 64x64


@pytest.mark.parametrize("sampler", ["ddim", "euler-a"])
def test_depth_matches_stable_diffusion_controlnet_pipeline(
    sampler, sd_pipe, tiny_model_dir, registry, float_engine_cls
):
    from diffusers import StableDiffusionControlNetPipeline

    model = registry.get("builtin:tiny")
    pipe = StableDiffusionControlNetPipeline(
        **{name: getattr(sd_pipe, name) for name in ("vae", "text_encoder", "tokenizer", "unet")},
        controlnet=model.controlnet,
        scheduler=make_scheduler(sampler, model.scheduler_config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    maps = [_depth_map(1), _depth_map(2)]
    key = BatchKey("builtin:tiny", "depth", 64, 64, STEPS, sampler, 4.0)
    items = [
        BatchItem("a", "a house", "fog", seed=5, control_image=maps[0]),
        BatchItem("b", "a tree", "", seed=6, control_image=maps[1]),
    ]
    ours = _gouache(float_engine_cls(registry), key, items)
    reference = pipe(
        ["a house", "a tree"],
        image=maps,
        negative_prompt=["fog", ""],
        num_inference_steps=STEPS,
        guidance_scale=4.0,
        height=64,
        width=64,
        generator=_generators(5, 6),
        output_type="np",
    ).images
    assert np.abs(ours - reference).max() < TOL
    # And the map really matters: the same prompt and seed with another map differ.
    swapped = [replace(item, control_image=maps[1 - n]) for n, item in enumerate(items)]
    other = _gouache(float_engine_cls(registry), key, swapped)
    assert np.abs(ours - other).max() > 1e-3


def test_sdxl_depth_matches_stable_diffusion_xl_controlnet_pipeline(
    tiny_xl_model_dir, registry, float_engine_cls
):
    from diffusers import StableDiffusionXLControlNetPipeline

    model = registry.get("tiny-xl")
    pipe = StableDiffusionXLControlNetPipeline.from_pretrained(
        tiny_xl_model_dir / "pipeline", controlnet=model.controlnet, local_files_only=True
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler("euler-a", model.scheduler_config)
    depth = _depth_map(3)
    key = BatchKey("tiny-xl", "depth", 64, 64, STEPS, "euler-a", 5.0)
    ours = _gouache(
        float_engine_cls(registry),
        key,
        [BatchItem("a", "a house", "fog", seed=9, control_image=depth)],
    )
    reference = pipe(
        "a house",
        image=depth,
        negative_prompt="fog",
        num_inference_steps=STEPS,
        guidance_scale=5.0,
        height=64,
        width=64,
        generator=_generators(9),
        output_type="np",
    ).images
    assert np.abs(ours - reference).max() < TOL

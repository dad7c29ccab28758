"""The shipped demo model loads like any checkpoint and draws the colour it is asked for.

Thresholds are what the committed checkpoint honestly meets on CPU (see
benchmarks/results/demo_quality.json for the full, held-out figures); raise them as the
checkpoint improves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

MODELS = Path(__file__).resolve().parents[2] / "gouache" / "models" / "demo"

pytestmark = pytest.mark.slow  # the weights ship with the repository: a missing file fails

# Prompts on plain backgrounds, one per colour family the judge must tell apart.
PROMPTS = {
    "red": "a large red circle in the center on a plain blue background",
    "yellow": "a large yellow square in the center on a plain black background",
    "blue": "a large blue triangle in the center on a plain white background",
    "green": "a large green star in the center on a plain purple background",
}
SEEDS = (0, 1)
# The committed checkpoint judges 98% colour-correct on *held-out* prompts (demo_quality.json);
# 6 of these 8 in-distribution images leaves room for one unlucky seed on another CPU.
MIN_COLOUR_ACCURACY = 0.75


@pytest.fixture(scope="module")
def pipe():  # noqa: ANN201
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    torch.set_num_threads(2)
    pipe = StableDiffusionPipeline.from_pretrained(
        MODELS / "pipeline", safety_checker=None, local_files_only=True
    )
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _generate(pipe, prompts: list[str], seeds: tuple[int, ...]) -> np.ndarray:  # noqa: ANN001
    import torch

    from gouache.config import builtin_demo_spec

    spec = builtin_demo_spec()
    jobs = [(p, s) for p in prompts for s in seeds]
    out = pipe(
        [p for p, _ in jobs],
        num_inference_steps=spec.default_steps,
        guidance_scale=spec.default_guidance,
        height=spec.default_height,
        width=spec.default_width,
        output_type="np",
        generator=[torch.Generator().manual_seed(s) for _, s in jobs],
    ).images
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)


def test_shipped_pipeline_has_every_standard_component() -> None:
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (MODELS / "pipeline" / part).is_dir()
    weights = list(MODELS.rglob("*.safetensors"))
    assert weights and not list(MODELS.rglob("*.bin")) and not list(MODELS.rglob("*.pt"))
    assert sum(f.stat().st_size for f in MODELS.rglob("*") if f.is_file()) < 40 * 2**20


def test_generated_images_have_the_asked_colour(pipe) -> None:  # noqa: ANN001
    from tools.demo.judge import judge_batch, load_judge

    images = _generate(pipe, list(PROMPTS.values()), SEEDS)
    assert images.shape == (len(PROMPTS) * len(SEEDS), 32, 32, 3)
    assert images.std() > 10, "the model draws flat noise-free images, not mush"
    judged = judge_batch(load_judge(MODELS / "judge"), images)["colour"]
    expected = [c for c in PROMPTS for _ in SEEDS]
    accuracy = np.mean([j == e for j, e in zip(judged, expected, strict=True)])
    assert accuracy >= MIN_COLOUR_ACCURACY, list(zip(expected, judged, strict=True))


def test_depth_controlnet_and_clip_load_and_run(pipe) -> None:  # noqa: ANN001
    import torch
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
    from transformers import CLIPModel, CLIPProcessor

    from tools.demo.world import depth_to_image, render, sample_scene

    controlnet = ControlNetModel.from_pretrained(MODELS / "controlnet-depth", local_files_only=True)
    control = StableDiffusionControlNetPipeline(
        vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet,
        scheduler=pipe.scheduler, controlnet=controlnet, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )
    control.set_progress_bar_config(disable=True)
    scene = render(sample_scene(3, n_shapes=1))
    image = control(scene.caption, image=depth_to_image(scene.depth), num_inference_steps=4,
                    output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 32, 32, 3)

    clip = CLIPModel.from_pretrained(MODELS / "clip", local_files_only=True)
    processor = CLIPProcessor.from_pretrained(MODELS / "clip", local_files_only=True)
    inputs = processor(text=[scene.caption, "a small black ring at the top on a plain white background"],
                       images=[depth_to_image(scene.depth).convert("RGB")], return_tensors="pt",
                       padding="max_length")
    with torch.no_grad():
        out = clip(**inputs)
    assert out.logits_per_image.shape == (1, 2)

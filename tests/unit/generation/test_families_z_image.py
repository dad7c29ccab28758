"""Z-Image (Turbo) against diffusers' ``ZImagePipeline`` on the same tiny folder (Qwen3 encoder).

Its CFG is ``cond + g * (cond - uncond)``, on for g > 0; its caption features are per-prompt
lists, so prompts of different lengths share a call. Parity target 2/255 per pixel (float32,
3 steps); measured ~1e-6.
"""

from __future__ import annotations

import numpy as np
import pytest
from diffusers import ZImagePipeline

from gouache.generation.loop.batch import BatchItem, LaneSpec
from tests.support.transformer_families import (
    PIXEL_TOL,
    SIZE,
    generators,
    mixed_equals_alone,
    ours,
    registry_for,
)


@pytest.fixture(scope="module")
def z_folder(tiny_transformers):
    return tiny_transformers("z-image")


@pytest.mark.parametrize("guidance", [3.0, 0.0])
def test_z_image_matches_z_image_pipeline(guidance, z_folder, tmp_path, float_engine_cls):
    registry = registry_for(z_folder, tmp_path)
    items = [BatchItem("a", "a red cat", "blurry", seed=5, count=2),
             BatchItem("b", "a blue dog in a small house", "", seed=9)]  # fmt: skip
    got = ours(float_engine_cls(registry), items, 3, "flow-euler", guidance)
    pipe = ZImagePipeline.from_pretrained(z_folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    reference = pipe(
        ["a red cat", "a red cat", "a blue dog in a small house"], negative_prompt=["blurry", "blurry", ""],
        num_inference_steps=3, guidance_scale=guidance, height=SIZE, width=SIZE,
        generator=generators(5, 6, 9), output_type="np",
    ).images  # fmt: skip
    assert np.abs(got - reference).max() <= PIXEL_TOL
    assert registry.get("m").family.name == "z-image"


def test_prompts_of_different_lengths_share_a_call(z_folder, tmp_path, float_engine_cls, float_running_cls):
    registry = registry_for(z_folder, tmp_path)
    jobs = [
        (BatchItem("a", "a cat", "blurry", seed=1), LaneSpec(3, "flow-euler", 2.0)),
        (BatchItem("b", "a very long prompt about a blue dog in a house", seed=2), LaneSpec(2, "flow-euler", 0.0)),
        (BatchItem("c", "an owl", seed=3), LaneSpec(4, "flow-euler-karras", 0.0, diversify=True)),  # CADS
    ]  # fmt: skip
    widest = mixed_equals_alone(registry, float_running_cls, float_engine_cls, jobs, {"c": 1})
    assert widest == 4

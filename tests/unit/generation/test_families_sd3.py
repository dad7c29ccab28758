"""SD3 against diffusers' ``StableDiffusion3Pipeline`` on the same tiny folder (two CLIPs + T5).

Real classifier-free guidance: unconditional rows run beside the conditional ones. Parity
target 2/255 per pixel (float32, 3 steps); measured ~1.5e-6 (two pipeline calls per prompt set
against one batched call).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from diffusers import StableDiffusion3Pipeline

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
def sd3_folder(tiny_transformers):
    return tiny_transformers("sd3")


@pytest.mark.parametrize(("sampler", "guidance"), [("flow-euler", 5.0), ("flow-euler-karras", 0.0)])
def test_sd3_matches_stable_diffusion_3_pipeline(sampler, guidance, sd3_folder, tmp_path, float_engine_cls):
    registry = registry_for(sd3_folder, tmp_path)
    items = [BatchItem("a", "a red cat", "blurry", seed=5, count=2), BatchItem("b", "a blue dog", "", seed=9)]
    got = ours(float_engine_cls(registry), items, 3, sampler, guidance)
    pipe = StableDiffusion3Pipeline.from_pretrained(sd3_folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    if sampler == "flow-euler-karras":
        pipe.scheduler = pipe.scheduler.from_config(pipe.scheduler.config, use_karras_sigmas=True)
    reference = pipe(
        ["a red cat", "a red cat", "a blue dog"], negative_prompt=["blurry", "blurry", ""],
        num_inference_steps=3, guidance_scale=guidance, height=SIZE, width=SIZE,
        generator=generators(5, 6, 9), output_type="np",
    ).images  # fmt: skip
    assert np.abs(got - reference).max() <= PIXEL_TOL


def test_sd3_with_dynamic_shifting_uses_the_token_count(sd3_folder, tmp_path, float_engine_cls):
    """An SD3.5-style config that shifts by resolution: mu from (h / patch) * (w / patch)."""
    import shutil

    folder = shutil.copytree(sd3_folder, tmp_path / "dynamic")
    config_path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "use_dynamic_shifting": True}))
    registry = registry_for(folder, tmp_path)
    items = [BatchItem("a", "a red cat", "blurry", seed=5)]
    got = ours(float_engine_cls(registry), items, 2, "flow-euler", 4.0)
    pipe = StableDiffusion3Pipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    reference = pipe("a red cat", negative_prompt="blurry", num_inference_steps=2, guidance_scale=4.0,
                     height=SIZE, width=SIZE, generator=generators(5), output_type="np").images  # fmt: skip
    assert np.abs(got - reference).max() <= PIXEL_TOL


def test_mixed_cfg_and_plain_lanes_equal_each_alone(sd3_folder, tmp_path, float_engine_cls, float_running_cls):
    registry = registry_for(sd3_folder, tmp_path)
    jobs = [
        (BatchItem("a", "a red cat", "blurry", seed=1), LaneSpec(3, "flow-euler", 5.0)),
        (BatchItem("b", "a blue dog", seed=2), LaneSpec(2, "flow-euler", 1.0)),  # no CFG row
        (BatchItem("c", "a green owl", "dark", seed=3, guidance_interval=(0.2, 0.8)),
         LaneSpec(4, "flow-euler-karras", 7.0)),
    ]  # fmt: skip
    widest = mixed_equals_alone(registry, float_running_cls, float_engine_cls, jobs, {"c": 1})
    assert widest == 5  # two CFG lanes (2 rows each) and a plain one in one call

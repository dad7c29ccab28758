"""Parity for the other SD families the engine claims: SD 2.x (v-prediction), SD-Turbo-style
single-step sampling without guidance, and LCM-distilled UNets (guidance embedding).

Each variant is a copy of builtin:tiny with the one thing that makes the family different,
saved and loaded through ``from_pretrained`` like a real checkpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gouache.config import ModelSpec
from gouache.generation.loop.batch import BatchItem, BatchKey
from gouache.generation.loop.samplers import make_scheduler
from gouache.generation.models import ModelRegistry

TOL = 1e-4


def _variant(source: Path, target: Path, *, scheduler: dict | None = None, lcm: bool = False) -> Path:
    shutil.copytree(source / "pipeline", target)
    if scheduler:
        path = target / "scheduler" / "scheduler_config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **scheduler}))
    if lcm:  # a UNet that takes the guidance scale as an embedding (LCM distillation)
        from diffusers import UNet2DConditionModel

        config = dict(UNet2DConditionModel.load_config(target / "unet"))
        config["time_cond_proj_dim"] = 32
        torch.manual_seed(3)
        UNet2DConditionModel.from_config(config).save_pretrained(target / "unet")
    return target


def _compare(directory: Path, tmp_path: Path, sampler: str, steps: int, guidance: float, float_engine_cls) -> None:
    from diffusers import StableDiffusionPipeline

    registry = ModelRegistry({"variant": ModelSpec(path=str(directory))}, cache_dir=tmp_path, device="cpu")
    items = [BatchItem("a", "a red cat", "blurry", seed=5), BatchItem("b", "a blue dog", "", seed=9)]
    key = BatchKey("variant", "txt2img", 64, 64, steps, sampler, guidance)
    results = float_engine_cls(registry).generate(key, items)
    ours = np.stack([image for result in results for image in result.images])

    pipe = StableDiffusionPipeline.from_pretrained(directory, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler(sampler, registry.get("variant").scheduler_config)
    reference = pipe(
        ["a red cat", "a blue dog"], negative_prompt=["blurry", ""], num_inference_steps=steps,
        guidance_scale=guidance, height=64, width=64, output_type="np",
        generator=[torch.Generator().manual_seed(s) for s in (5, 9)],
    ).images  # fmt: skip
    assert np.abs(ours - reference).max() < TOL


@pytest.mark.parametrize("sampler", ["ddim", "euler", "dpmpp-2m-karras"])
def test_sd2_v_prediction(sampler, tiny_model_dir, tmp_path, float_engine_cls) -> None:
    variant = _variant(tiny_model_dir, tmp_path / "sd2", scheduler={"prediction_type": "v_prediction"})
    _compare(variant, tmp_path, sampler, 3, 7.0, float_engine_cls)


def test_turbo_style_one_step_without_guidance(tiny_model_dir, tmp_path, float_engine_cls) -> None:
    variant = _variant(tiny_model_dir, tmp_path / "turbo", scheduler={"timestep_spacing": "trailing"})
    _compare(variant, tmp_path, "euler-a", 1, 0.0, float_engine_cls)


def test_lcm_distilled_unet_with_guidance_embedding(tiny_model_dir, tmp_path, float_engine_cls) -> None:
    variant = _variant(tiny_model_dir, tmp_path / "lcm", lcm=True)
    _compare(variant, tmp_path, "lcm", 4, 8.0, float_engine_cls)

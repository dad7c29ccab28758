"""The VAE upcast done once: force_upcast VAEs stay fp32, an overflowing fp16 decode is redone
in fp32 (any family), and GIF frames and --process frames are never black."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gouache.config import ModelSpec
from gouache.generation.experiments.noising import noised
from gouache.generation.loop.batch import BatchItem, LaneSpec, ShapeKey
from gouache.generation.models import ModelRegistry


@pytest.fixture(scope="module")
def overflowing_vae_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """builtin:tiny whose VAE overflows in fp16 and is fine in fp32: one post_quant_conv output
    channel is 6e4 + 1e4 x (sum of the latents), past fp16's 65504 wherever that sum is
    positive enough, and decoder.conv_in reads it with zero weights (0 x inf is NaN in fp16,
    and one NaN spreads through the group norms; 0 in fp32)."""
    from diffusers import AutoencoderKL

    folder = tmp_path_factory.mktemp("overflow") / "pipeline"
    shutil.copytree(tiny_model_dir / "pipeline", folder)
    vae = AutoencoderKL.from_pretrained(folder / "vae")
    with torch.no_grad():
        vae.post_quant_conv.weight[0] = 1e4
        vae.post_quant_conv.bias[0] = 6e4
        vae.decoder.conv_in.weight[:, 0] = 0.0
    vae.register_to_config(force_upcast=False)
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    assert json.loads((folder / "vae" / "config.json").read_text())["force_upcast"] is False
    return folder


def _picture(array) -> Image.Image:
    return Image.fromarray((np.asarray(array) * 255).round().astype(np.uint8))


def _assert_not_black(arrays) -> None:
    for a in arrays:
        a = np.asarray(a, dtype=np.float32)
        assert np.isfinite(a).all() and a.max() > 0.05, "a black (or NaN) frame"


def test_an_overflowing_fp16_vae_is_redone_in_fp32_frames_and_process_too(
    overflowing_vae_dir, tiny_cache_dir, float_running_cls, caplog
):
    specs = {"over": ModelSpec(path=str(overflowing_vae_dir), dtype="float16")}
    registry = ModelRegistry(specs, cache_dir=tiny_cache_dir, device="cpu")
    model = registry.get("over")
    assert model.vae.dtype == torch.float16 and model.denoiser.dtype == torch.float16
    batch = float_running_cls(registry, ShapeKey("over", 64, 64))
    batch.admit(BatchItem("gif", "a red cat", seed=1, frames_every=1), LaneSpec(3, "euler", 5.0))
    [result] = batch.run()
    assert result.ok
    _assert_not_black(result.images)
    _assert_not_black(result.frames[0])  # every GIF frame
    assert model.vae.dtype == torch.float32  # upcast once, for good
    assert "decoded non-finite values" in caplog.text
    frames = noised(model, _picture(result.images[0]), [999, 500, 1], seed=1)
    _assert_not_black([np.asarray(f, dtype=np.float32) / 255 for f in frames])


def test_process_frames_of_a_fresh_overflowing_vae_are_not_black(overflowing_vae_dir, tiny_cache_dir):
    registry = ModelRegistry({"over": ModelSpec(path=str(overflowing_vae_dir), dtype="float16")},
                             cache_dir=tiny_cache_dir, device="cpu")  # fmt: skip
    model = registry.get("over")
    image = Image.new("RGB", (64, 64), (200, 120, 40))
    frames = noised(model, image, [999, 500, 1], seed=1)  # --process before any other decode
    _assert_not_black([np.asarray(f, dtype=np.float32) / 255 for f in frames])


def test_a_force_upcast_vae_stays_fp32_and_is_never_cast(tiny_specs, tiny_cache_dir, float_running_cls,
                                                         monkeypatch):  # fmt: skip
    spec = tiny_specs["tiny-xl"].model_copy(update={"dtype": "float16"})
    registry = ModelRegistry({"xl16": spec}, cache_dir=tiny_cache_dir, device="cpu")
    model = registry.get("xl16")
    assert model.vae.config.force_upcast
    assert model.vae.dtype == torch.float32 and model.denoiser.dtype == torch.float16
    casts: list[object] = []
    real_to = type(model.vae).to
    monkeypatch.setattr(type(model.vae), "to", lambda self, *a, **k: casts.append(a or k) or real_to(self, *a, **k))
    batch = float_running_cls(registry, ShapeKey("xl16", 64, 64))
    batch.admit(BatchItem("gif", "a red cat", seed=1, frames_every=1), LaneSpec(2, "euler", 5.0))
    [result] = batch.run()
    assert result.ok and casts == []
    _assert_not_black(result.frames[0])

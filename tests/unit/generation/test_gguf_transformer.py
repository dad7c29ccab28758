"""A transformer from a GGUF file (``transformer = "x.gguf"``), written here from a tiny model.

The file is what a 16-24 GB card runs Flux or Z-Image from: its large 2-D weights quantized to
Q8_0, biases and norms F32, odd-shaped weights F16 (``tests/support/gguf_files.py``). It loads
through the registry, diffusers' ``from_single_file`` with ``GGUFQuantizationConfig`` and the
folder's ``transformer/`` config, the rest of the model from the folder; the transformer keeps
``GGUFParameter`` weights (uint8 blocks, dequantized per call on the CPU by diffusers'
``GGUFLinear.forward_native``) and the image stays close to the unquantized model's.

Z-Image is written under its original (ComfyUI) keys, as the published Z-Image GGUF files are,
so diffusers' key conversion runs. Flux is written under diffusers' keys: diffusers 0.42.1's
``convert_flux_transformer_checkpoint_to_diffusers`` hard-codes FLUX.1's width (``inner_dim =
3072`` for the single blocks' fused ``linear1`` split), so a tiny Flux in the original (city96)
layout cannot go through it; a real FLUX.1 file can, and diffusers loads a file whose keys are
already its own without converting.

Measured (float32, 3 steps, 32x32, one image): the Q8_0 image differs from the unquantized one
by at most 0.97/255 per pixel (Z-Image) and 0.65/255 (Flux dev); the bound is 4/255, and the
difference must not be zero (a file ignored for the folder's weights would give zero; one loaded
as full weights would fail the ``GGUFParameter`` check).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gouache.errors import InvalidRequest
from gouache.generation.loop.batch import BatchItem
from tests.support.gguf_files import write_gguf, z_image_original_layout
from tests.support.transformer_families import ours, registry_for

ITEMS = [BatchItem("a", "a red cat", seed=5)]
GGUF_TOL = 4 / 255


def _gguf_file(folder, tmp_path, original_layout: bool):
    from diffusers import DiffusionPipeline

    index = DiffusionPipeline.load_config(str(folder))
    cls = getattr(__import__("diffusers"), index["transformer"][1])
    state = cls.from_pretrained(folder, subfolder="transformer").state_dict()
    if original_layout:
        state = z_image_original_layout(state)
    path = tmp_path / "transformer-Q8_0.gguf"
    kinds = write_gguf(path, state, arch="test")
    assert {"Q8_0", "F32"} <= set(kinds.values())
    return path


@pytest.mark.parametrize(("variant", "original_layout", "guidance"),
                         [("z-image", True, 0.0), ("flux-dev", False, 3.5)])  # fmt: skip
def test_a_gguf_transformer_loads_quantized_and_draws_close(
    variant, original_layout, guidance, tiny_transformers, tmp_path, float_engine_cls
):
    pytest.importorskip("gguf")  # the test extra installs it (pyproject.toml)
    from diffusers.quantizers.gguf.utils import GGUFLinear, GGUFParameter

    folder = tiny_transformers(variant)
    path = _gguf_file(folder, tmp_path, original_layout)
    plain = registry_for(folder, tmp_path)
    quantized = registry_for(folder, tmp_path, transformer=str(path))
    model = quantized.get("m")
    weights = [p for p in model.denoiser.parameters() if isinstance(p, GGUFParameter)]
    assert weights and all(p.dtype == torch.uint8 for p in weights)
    assert any(isinstance(m, GGUFLinear) for m in model.denoiser.modules())
    # the other parts are the folder's, the same as the unquantized model's
    torch.testing.assert_close(model.vae.state_dict(), plain.get("m").vae.state_dict())
    reference = ours(float_engine_cls(plain), ITEMS, 3, "flow-euler", guidance)
    got = ours(float_engine_cls(quantized), ITEMS, 3, "flow-euler", guidance)
    diff = np.abs(got - reference).max()
    assert 0 < diff <= GGUF_TOL, diff


def test_a_transformer_file_is_refused_for_a_unet_family(tiny_model_dir, tmp_path):
    registry = registry_for(tiny_model_dir / "pipeline", tmp_path, transformer=str(tmp_path / "x.gguf"))
    with pytest.raises(InvalidRequest, match="UNet, not a transformer"):
        registry.get("m")


def test_a_missing_transformer_file_names_the_model(tiny_transformers, tmp_path):
    from gouache.errors import ModelUnavailable

    registry = registry_for(tiny_transformers("z-image"), tmp_path, transformer=str(tmp_path / "gone.gguf"))
    with pytest.raises(ModelUnavailable, match="'m'.*missing file.*gone.gguf"):
        registry.get("m")


def test_without_the_gguf_package_the_error_says_what_to_install(tiny_transformers, tmp_path, monkeypatch):
    import importlib.util

    from gouache.errors import ModelUnavailable

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    path = tmp_path / "t.gguf"
    path.write_bytes(b"GGUF")
    registry = registry_for(tiny_transformers("z-image"), tmp_path, transformer=str(path))
    with pytest.raises(ModelUnavailable, match=r"gguf package is not installed: pip install 'gouache\[gguf\]'"):
        registry.get("m")

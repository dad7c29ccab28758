"""ModelRegistry: load once through from_pretrained, detect families, name what is missing."""

from __future__ import annotations

import json

import pytest
import torch

from gouache.config import ModelSpec, builtin_demo_spec, builtin_tiny_spec
from gouache.errors import ModelUnavailable, NotFound
from gouache.generation import models as models_module
from gouache.generation.models import ModelRegistry
from gouache.generation.tiny import ensure_tiny


def test_each_model_loads_once(tiny_cache_dir, tiny_model_dir, monkeypatch):
    from diffusers import UNet2DConditionModel

    calls: list[str] = []
    real = UNet2DConditionModel.from_pretrained.__func__

    def counting(cls, *args, **kwargs):
        calls.append(str(args[0]))
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(UNet2DConditionModel, "from_pretrained", classmethod(counting))
    registry = ModelRegistry(
        {"builtin:tiny": builtin_tiny_spec()}, cache_dir=tiny_cache_dir, device="cpu"
    )
    first = registry.get("builtin:tiny")
    assert registry.get("builtin:tiny") is first
    assert calls == [str(tiny_model_dir / "pipeline")]  # the built-in went through from_pretrained


def test_builtin_tiny_components(registry, tiny_model_dir):
    model = registry.get("builtin:tiny")
    assert model.family.name == "sd" and model.device.type == "cpu" and model.dtype == torch.float32
    assert len(model.tokenizers) == len(model.text_encoders) == 1
    assert model.controlnet is not None and model.preview_decoder is None
    assert model.clip_path == str(tiny_model_dir / "clip")
    assert model.scheduler_config["_class_name"] == "DDIMScheduler"
    assert model.vae_scale_factor == 2
    assert not any(p.requires_grad for p in model.denoiser.parameters())


def test_family_is_detected_from_model_index(registry, tiny_xl_model_dir):
    index = json.loads((tiny_xl_model_dir / "pipeline" / "model_index.json").read_text())
    assert index["text_encoder_2"][0] == "transformers"
    model = registry.get("tiny-xl")
    assert model.family.name == "sdxl"
    assert len(model.tokenizers) == len(model.text_encoders) == 2
    assert model.force_zeros_for_empty_prompt
    assert registry.get("tiny-preview").preview_decoder is not None


def test_tiny_build_is_reused(tiny_model_dir):
    marker = tiny_model_dir / "pipeline" / "unet" / "config.json"
    before = marker.stat().st_mtime_ns
    assert ensure_tiny(tiny_model_dir) == tiny_model_dir
    assert marker.stat().st_mtime_ns == before


def test_unknown_model_lists_the_configured_ones(registry):
    with pytest.raises(NotFound) as info:
        registry.get("sd-9000")
    assert "sd-9000" in info.value.message and "builtin:tiny" in info.value.message


def test_missing_demo_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(models_module, "demo_root", lambda: tmp_path / "demo")
    registry = ModelRegistry(
        {"builtin:demo": builtin_demo_spec()}, cache_dir=tmp_path, device="cpu"
    )
    with pytest.raises(NotFound, match="builtin:demo is not installed"):
        registry.get("builtin:demo")


def test_a_missing_local_model_is_not_downloaded(tmp_path):
    registry = ModelRegistry(
        {"gone": ModelSpec(path=str(tmp_path / "nothing"))}, cache_dir=tmp_path
    )
    with pytest.raises(ModelUnavailable, match="missing file") as caught:
        registry.get("gone")
    assert isinstance(caught.value.__cause__, OSError)  # from_pretrained, offline: no download




@pytest.mark.parametrize("evict", ["cpu", "drop"])
def test_models_over_the_memory_budget_leave_the_device_least_recently_used_first(
    tiny_cache_dir, monkeypatch, evict
):
    """Room for two of three models: loading a third moves the least recently used off the
    device (to the CPU, whence it comes back as the same object, or dropped and read again)."""
    from diffusers import UNet2DConditionModel

    specs = {name: builtin_tiny_spec() for name in ("a", "b", "c")}
    probe = ModelRegistry({"a": specs["a"]}, cache_dir=tiny_cache_dir, device="cpu")
    size = models_module._weight_bytes(probe.get("a"))
    loads: list[str] = []
    real = UNet2DConditionModel.from_pretrained.__func__
    monkeypatch.setattr(UNet2DConditionModel, "from_pretrained",
                        classmethod(lambda cls, *a, **k: loads.append("unet") or real(cls, *a, **k)))  # fmt: skip
    moved: list[tuple[str, str]] = []
    real_place = models_module._place
    monkeypatch.setattr(models_module, "_place",
                        lambda model, device: moved.append((model.name, device.type)) or real_place(model, device))  # fmt: skip
    registry = ModelRegistry(specs, cache_dir=tiny_cache_dir, device="cpu",
                             memory_budget_bytes=2 * size + size // 2, evict=evict)  # fmt: skip
    a = registry.get("a")
    registry.get("b")
    registry.get("a")  # now b is the least recently used
    registry.get("c")
    assert registry.resident == ("a", "c")
    assert len(loads) == 3
    again = registry.get("b")  # a leaves now
    assert registry.resident == ("c", "b")
    if evict == "cpu":
        # placed when loaded, moved to the CPU for c, placed again: from RAM, not from disk
        assert [m for m in moved if m[0] == "b"] == [("b", "cpu")] * 3 and len(loads) == 3
        assert registry.get("a") is a
    else:
        assert len(loads) == 4 and again is not None
        assert registry.get("a") is not a
    assert len(registry.resident) == 2


def test_without_a_budget_on_a_cpu_every_model_stays(tiny_cache_dir):
    specs = {name: builtin_tiny_spec() for name in ("a", "b")}
    registry = ModelRegistry(specs, cache_dir=tiny_cache_dir, device="cpu")
    first = registry.get("a")
    registry.get("b")
    assert registry.resident == ("a", "b") and registry.get("a") is first


@pytest.mark.parametrize(("family", "cuda"), [
    ("sd", torch.float16), ("sdxl", torch.float16),
    ("flux", torch.bfloat16), ("flux2-klein", torch.bfloat16), ("sd3", torch.bfloat16), ("z-image", torch.bfloat16),
])  # fmt: skip
def test_auto_dtype_is_the_familys_on_cuda_and_float32_elsewhere(family, cuda):
    from gouache.generation.families import family_named

    pick = models_module._pick_dtype
    assert pick("auto", torch.device("cuda"), family_named(family)) == cuda
    assert pick("auto", torch.device("cuda", 1), family_named(family)) == cuda
    assert pick("auto", torch.device("cpu"), family_named(family)) == torch.float32
    assert pick("float16", torch.device("cuda"), family_named(family)) == torch.float16  # as configured
    assert pick("float32", torch.device("cuda"), family_named(family)) == torch.float32

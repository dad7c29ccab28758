"""Checkpoints as people have them: one original-layout file, fp16-only folders, bad files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from gouache.config import ModelSpec
from gouache.errors import InvalidRequest, ModelUnavailable
from gouache.generation.loop.batch import BatchItem, BatchKey
from gouache.generation.models import ModelRegistry
from gouache.generation.single_file import CONFIGS, builtin_config, model_type
from gouache.generation.tiny import build_single_file_pair


@pytest.fixture(scope="module", params=["sd", "sdxl"])
def pair(request, tmp_path_factory) -> tuple[str, Path, Path, Path]:
    root = tmp_path_factory.mktemp(f"single-{request.param}")
    return (request.param, *build_single_file_pair(root, request.param))


def _images(engine_cls, specs: dict, cache: Path, name: str) -> list:
    engine = engine_cls(ModelRegistry(specs, cache_dir=cache, device="cpu"))
    key = BatchKey(name, "txt2img", 64, 64, 2, "euler-a", 5.0)
    [result] = engine.generate(key, [BatchItem("a", "a red cat", "blurry", seed=3, count=2)])
    assert result.ok, result.error
    return result.images


def test_a_single_file_gives_the_folders_images(pair, float_engine_cls, tmp_path):
    family, folder, file, config = pair
    specs = {
        "folder": ModelSpec(path=str(folder)),
        "file": ModelSpec(path=str(file), config=str(config)),
    }
    registry = ModelRegistry(specs, cache_dir=tmp_path, device="cpu")
    assert registry.get("file").family.name == family
    want = _images(float_engine_cls, specs, tmp_path, "folder")
    got = _images(float_engine_cls, specs, tmp_path, "file")
    for a, b in zip(want, got, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_a_ckpt_file_loads_too(pair, tmp_path):
    import torch
    from safetensors.torch import load_file

    family, _folder, file, config = pair
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": load_file(str(file))}, ckpt)
    registry = ModelRegistry({"m": ModelSpec(path=str(ckpt), config=str(config))},
                             cache_dir=tmp_path, device="cpu")  # fmt: skip
    assert registry.get("m").family.name == family


def test_the_architecture_picks_the_shipped_configs(pair):
    family, _folder, file, _config = pair
    # A tiny UNet is too shallow for diffusers' SD1 marker key; its default is "v1" all the same.
    assert model_type(file) in ("v1", "xl_base")
    if family == "sd":
        assert builtin_config("m", file) == CONFIGS / "sd15"


@pytest.mark.parametrize("pair", ["sd"], indirect=True)  # the tiny SDXL file is too small
def test_shipped_configs_without_a_vocabulary_say_what_to_do(pair, tmp_path):  # to be recognised
    _family, _folder, file, _config = pair
    registry = ModelRegistry({"m": ModelSpec(path=str(file))}, cache_dir=tmp_path, device="cpu")
    with pytest.raises(InvalidRequest, match=r"tokenizer files are missing.*config = "):
        registry.get("m")


@pytest.mark.parametrize("config", ["sd15", "sd2", "sdxl"])
def test_shipped_config_folders_are_complete(config):
    from diffusers import DiffusionPipeline

    index = DiffusionPipeline.load_config(str(CONFIGS / config))
    for part, entry in index.items():
        if isinstance(entry, list) and entry[0] is not None:
            folder = CONFIGS / config / part
            names = {p.name for p in folder.iterdir()}
            assert names & {"config.json", "scheduler_config.json", "tokenizer_config.json"}, part


def test_an_fp16_only_folder_loads(tiny_model_dir, tmp_path):
    folder = tmp_path / "fp16-only"
    shutil.copytree(tiny_model_dir / "pipeline", folder)
    for weights in folder.rglob("*.safetensors"):
        weights.rename(weights.with_name(weights.name.replace(".safetensors", ".fp16.safetensors")))
    for variant in (None, "fp16"):
        registry = ModelRegistry({"m": ModelSpec(path=str(folder), variant=variant)},
                                 cache_dir=tmp_path, device="cpu")  # fmt: skip
        assert registry.get("m").family.name == "sd"


def test_a_broken_file_is_a_model_error_naming_model_and_cause(tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    registry = ModelRegistry(
        {"broken": ModelSpec(path=str(bad)), "gone": ModelSpec(path=str(tmp_path / "missing"))},
        cache_dir=tmp_path, device="cpu",
    )  # fmt: skip
    with pytest.raises(ModelUnavailable, match=r"'broken' could not be loaded \(wrong format\)"):
        registry.get("broken")
    with pytest.raises(ModelUnavailable, match=r"'gone' could not be loaded \(missing file\)"):
        registry.get("gone")


def test_out_of_memory_while_loading_is_named(tiny_model_dir, tmp_path, monkeypatch):
    import torch
    from diffusers import UNet2DConditionModel

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(UNet2DConditionModel, "from_pretrained", oom)
    registry = ModelRegistry({"m": ModelSpec(path=str(tiny_model_dir / "pipeline"))},
                             cache_dir=tmp_path, device="cpu")  # fmt: skip
    with pytest.raises(ModelUnavailable, match="out of memory while loading"):
        registry.get("m")

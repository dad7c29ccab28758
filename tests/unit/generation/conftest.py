"""Tiny models for the generation tests: built once per session, loaded via from_pretrained."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    """These machines are shared: tiny models run fine on one core."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models cache in which builtin:tiny is already built (registries reuse it)."""
    return tmp_path_factory.mktemp("models-cache")


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_cache_dir: Path) -> Path:
    """builtin:tiny (SD-shaped): pipeline/, controlnet-depth/, preview-decoder/, clip/."""
    from gouache.generation.tiny import ensure_tiny

    return ensure_tiny(tiny_cache_dir / "builtin-tiny", "sd")


@pytest.fixture(scope="session")
def tiny_xl_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SDXL-shaped tiny model, same layout as ``tiny_model_dir``."""
    from gouache.generation.tiny import ensure_tiny

    return ensure_tiny(tmp_path_factory.mktemp("xl") / "tiny-xl", "sdxl")


@pytest.fixture(scope="session")
def tiny_specs(tiny_model_dir: Path, tiny_xl_model_dir: Path) -> dict:
    """builtin:tiny, an SDXL model with a depth ControlNet, and one with a preview decoder."""
    from gouache.config import ModelSpec, builtin_tiny_spec

    return {
        "builtin:tiny": builtin_tiny_spec(),
        "tiny-xl": ModelSpec(
            path=str(tiny_xl_model_dir / "pipeline"),
            depth_controlnet=str(tiny_xl_model_dir / "controlnet-depth"),
        ),
        "tiny-preview": ModelSpec(
            path=str(tiny_model_dir / "pipeline"),
            preview_decoder=str(tiny_model_dir / "preview-decoder"),
        ),
    }


@pytest.fixture(scope="session")
def registry(tiny_specs: dict, tiny_cache_dir: Path, tiny_model_dir: Path):
    """One registry for the session: models load once and are only read."""
    from gouache.generation.models import ModelRegistry

    return ModelRegistry(tiny_specs, cache_dir=tiny_cache_dir, device="cpu")


@pytest.fixture
def float_engine_cls():
    """An Engine that returns float [0, 1] HxWx3 arrays instead of PIL images, for parity."""
    from gouache.generation.loop.engine import Engine

    class FloatEngine(Engine):
        def _postprocess(self, image, model):
            return list((image / 2 + 0.5).clamp(0, 1).cpu().permute(0, 2, 3, 1).float().numpy())

    return FloatEngine


def _floats(image):
    return list((image / 2 + 0.5).clamp(0, 1).cpu().permute(0, 2, 3, 1).float().numpy())


@pytest.fixture
def float_running_cls():
    """A RunningBatch that hands back float [0, 1] HxWx3 arrays, like ``float_engine_cls``."""
    from gouache.generation.loop.running import RunningBatch

    class FloatRunningBatch(RunningBatch):
        def _postprocess(self, image):
            return _floats(image)

    return FloatRunningBatch


@pytest.fixture(scope="session")
def demo_registry(tiny_cache_dir: Path):
    """The shipped builtin:demo model (the default model) beside builtin:tiny."""
    from gouache.config import builtin_demo_spec, builtin_tiny_spec
    from gouache.generation.models import ModelRegistry

    specs = {"builtin:demo": builtin_demo_spec(), "builtin:tiny": builtin_tiny_spec()}
    return ModelRegistry(specs, cache_dir=tiny_cache_dir, device="cpu")


@pytest.fixture(scope="session")
def tiny_transformers(tmp_path_factory: pytest.TempPathFactory):
    """``variant -> pipeline folder`` of the tiny flow-matching models, each built on first use."""
    from gouache.generation.tiny_transformers import ensure_tiny_transformer

    root = tmp_path_factory.mktemp("transformers")

    def folder(variant: str) -> Path:
        return ensure_tiny_transformer(root / variant, variant) / "pipeline"  # type: ignore[arg-type]

    return folder

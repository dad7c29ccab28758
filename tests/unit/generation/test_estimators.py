"""Depth estimators load random checkpoints through each backend's real loading code.

MiDaS: a randomly initialised DPT-hybrid saved as ``dpt_hybrid-midas-501f0c75.pt`` and loaded
by ``MidasDetector.from_pretrained(folder)``. transformers: tiny random DPT and Depth Anything
configs saved with ``save_pretrained`` and loaded through ``AutoModelForDepthEstimation`` +
``pipeline("depth-estimation")``. The demo estimator: the shipped safetensors. No mocks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gouache.config import (
    BUILTIN_DEMO,
    BUILTIN_TINY,
    ModelSpec,
    builtin_demo_spec,
    builtin_tiny_spec,
)
from gouache.generation.estimators import (
    AnnotatorEstimator,
    DemoEstimator,
    EstimatorRegistry,
    EstimatorSpec,
    GuardedEstimator,
    TransformersEstimator,
    parse_estimator,
)
from gouache.generation.models import demo_root
from gouache.generation.tiny import build_tiny_depth_estimator

CPU = torch.device("cpu")


def photo(width: int = 40, height: int = 28) -> Image.Image:
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def check(depth: np.ndarray, image: Image.Image) -> None:
    assert depth.shape == (image.height, image.width) and depth.dtype == np.float32
    assert np.isfinite(depth).all() and depth.min() >= 0.0 and depth.max() <= 1.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("midas:/models/annotators", EstimatorSpec("annotator", "/models/annotators", "midas")),
        ("zoe:lllyasviel/Annotators", EstimatorSpec("annotator", "lllyasviel/Annotators", "zoe")),
        ("leres:/a", EstimatorSpec("annotator", "/a", "leres")),
        ("midas", EstimatorSpec("annotator", "lllyasviel/Annotators", "midas")),
        ("annotators:/x", EstimatorSpec("annotator", "/x", "midas")),
        ("depth-anything/Depth-Anything-V2-Small-hf",
         EstimatorSpec("transformers", "depth-anything/Depth-Anything-V2-Small-hf")),
        ("transformers:/models/dpt", EstimatorSpec("transformers", "/models/dpt")),
        (BUILTIN_DEMO, EstimatorSpec("demo", BUILTIN_DEMO)),
        (BUILTIN_TINY, EstimatorSpec("transformers", BUILTIN_TINY)),
    ],
)  # fmt: skip
def test_estimator_names_parse(value: str, expected: EstimatorSpec) -> None:
    assert parse_estimator(value) == expected


@pytest.mark.slow
def test_midas_loads_a_random_dpt_hybrid_through_from_pretrained(tmp_path: Path) -> None:
    from controlnet_aux.midas.midas.dpt_depth import DPTDepthModel

    torch.manual_seed(0)
    model = DPTDepthModel(path=None, backbone="vitb_rn50_384", non_negative=False)
    torch.save(model.state_dict(), tmp_path / "dpt_hybrid-midas-501f0c75.pt")
    del model
    estimator = AnnotatorEstimator("midas", str(tmp_path), device=CPU, offline=True,
                                   detect_resolution=64)  # fmt: skip
    assert type(estimator.detector).__name__ == "MidasDetector"
    image = photo()
    check(estimator.estimate(image), image)


@pytest.mark.parametrize("kind", ["dpt", "depth_anything"])
def test_transformers_models_load_through_the_depth_estimation_pipeline(tmp_path: Path, kind: str) -> None:
    folder = build_tiny_depth_estimator(tmp_path / kind, kind)  # type: ignore[arg-type]
    assert (folder / "model.safetensors").is_file() and (folder / "preprocessor_config.json").is_file()
    estimator = TransformersEstimator(str(folder), device=CPU, offline=True)
    expected = "DPTForDepthEstimation" if kind == "dpt" else "DepthAnythingForDepthEstimation"
    assert type(estimator.pipe.model).__name__ == expected and not estimator.invert
    image = photo(52, 30)
    check(estimator.estimate(image), image)


def test_the_demo_estimator_reads_renders_of_the_world() -> None:
    from tools.demo.world import heldout_scenes, render

    folder = demo_root() / "depth-estimator"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert (folder / "model.safetensors").stat().st_size < 5 * 1024 * 1024
    estimator = DemoEstimator(str(folder), device=CPU)
    ious = []
    for scene in heldout_scenes(count_per_pair=1):
        rendered = render(scene)
        image = Image.fromarray(rendered.image)
        depth = estimator.estimate(image)
        check(depth, image)
        a, b = depth >= 0.5, rendered.depth >= 0.5
        ious.append((a & b).sum() / max((a | b).sum(), 1))
    assert np.mean(ious) > 0.8


def test_the_registry_loads_per_model_once_and_builtins_resolve(tmp_path: Path) -> None:
    registry = EstimatorRegistry(
        {"demo": builtin_demo_spec(), "tiny": builtin_tiny_spec(), "plain": ModelSpec(path="/x")},
        cache_dir=tmp_path, device="cpu",
    )  # fmt: skip
    assert registry.get("plain") is None and registry.get("unknown") is None
    demo = registry.get("demo")
    assert isinstance(demo, GuardedEstimator) and registry.get("demo") is demo
    assert isinstance(demo.inner, DemoEstimator)  # behind the device handling every GPU call has
    tiny = registry.get("tiny")
    assert isinstance(tiny, GuardedEstimator) and isinstance(tiny.inner, TransformersEstimator)
    assert (tmp_path / "builtin-tiny-depth" / "config.json").is_file()


def test_a_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    from gouache.errors import NotFound

    registry = EstimatorRegistry(
        {"m": ModelSpec(path="/x", depth_estimator=f"midas:{tmp_path / 'nothing'}")},
        cache_dir=tmp_path, device="cpu",
    )  # fmt: skip
    with pytest.raises(NotFound, match=r"The depth estimator of m \(midas:.*\) cannot be loaded"):
        registry.get("m")


def _params_dtypes(module: torch.nn.Module) -> set[torch.dtype]:
    return {p.dtype for p in module.parameters()}


HALF = [torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_the_demo_estimator_in_half_precision_matches_float32(dtype: torch.dtype) -> None:
    """``worker.helper_models = "half"`` on a GPU, run on the CPU with the dtype given directly:
    half-precision weights, a float32 depth map within 0.03 of float32's on every pixel."""
    from tools.demo.world import heldout_scenes, render

    folder = str(demo_root() / "depth-estimator")
    full, half = DemoEstimator(folder, device=CPU), DemoEstimator(folder, device=CPU, dtype=dtype)
    assert _params_dtypes(half.net) == {dtype} and _params_dtypes(full.net) == {torch.float32}
    for scene in heldout_scenes(count_per_pair=1)[:6]:
        image = Image.fromarray(render(scene).image)
        expected, got = full.estimate(image), half.estimate(image)
        check(got, image)
        assert np.abs(got - expected).max() < 0.03


def _spread_head(folder: Path) -> None:
    """Re-save a tiny random depth model with torch's default initialisation and a head whose
    output spreads over about 2..3.5: transformers' std-0.02 initialisation gives depths of
    1e-8, under float16's smallest number, which no real estimator predicts."""
    from transformers import AutoModelForDepthEstimation

    torch.manual_seed(1)
    model = AutoModelForDepthEstimation.from_pretrained(str(folder))
    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            module.reset_parameters()
    last = [m for m in model.head.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.mul_(40.0)
        last.bias.fill_(1.0)
    model.save_pretrained(folder)


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("kind", ["dpt", "depth_anything"])
def test_transformers_estimators_in_half_precision_match_float32(tmp_path: Path, kind: str,
                                                                 dtype: torch.dtype) -> None:  # fmt: skip
    """Half-precision weights through the pipeline (it casts pixel_values to the model's dtype;
    the model hands float32 back, numpy having no bfloat16): a depth map in [0, 1] within 0.05
    of float32's on every pixel (bfloat16 keeps 8 bits: 1/128 of a depth of 2)."""
    folder = build_tiny_depth_estimator(tmp_path / kind, kind)  # type: ignore[arg-type]
    _spread_head(folder)
    full = TransformersEstimator(str(folder), device=CPU, offline=True)
    half = TransformersEstimator(str(folder), device=CPU, offline=True, dtype=dtype)
    assert _params_dtypes(half.pipe.model) == {dtype} and _params_dtypes(full.pipe.model) == {torch.float32}
    for seed in (3, 4):
        image = Image.fromarray(np.random.default_rng(seed).integers(0, 255, (30, 52, 3), dtype=np.uint8))
        expected, got = full.estimate(image), half.estimate(image)
        check(got, image)
        assert np.ptp(expected) > 0.5 and np.abs(got - expected).max() < 0.05


@pytest.mark.slow
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_midas_in_half_precision_matches_float32(tmp_path: Path, dtype: torch.dtype) -> None:
    """controlnet-aux feeds its network float32: the network casts it on the way in and hands
    float32 back, so the detector's own code runs unchanged; a depth map within 0.03 of
    float32's on every pixel."""
    from controlnet_aux.midas.midas.dpt_depth import DPTDepthModel

    torch.manual_seed(0)
    model = DPTDepthModel(path=None, backbone="vitb_rn50_384", non_negative=False)
    torch.save(model.state_dict(), tmp_path / "dpt_hybrid-midas-501f0c75.pt")
    del model
    full, half = (AnnotatorEstimator("midas", str(tmp_path), device=CPU, offline=True, detect_resolution=64,
                                     dtype=t) for t in (None, dtype))  # fmt: skip
    assert _params_dtypes(half.net) == {dtype} and _params_dtypes(full.net) == {torch.float32}
    image = photo(64, 48)
    expected, got = full.estimate(image), half.estimate(image)
    check(got, image)
    assert np.ptp(expected) > 0.5 and np.abs(got - expected).max() < 0.03

"""The parity of ``test_parity.py`` in half precision: the tiny SD and SDXL models loaded through
gouache's registry with the user's ``dtype = "bfloat16"`` (or ``"float16"``) setting, against
diffusers' pipelines loaded from the same folders with the same ``torch_dtype``; same prompts,
seeds, steps and sampler. txt2img and depth (ControlNet), every eps sampler (float16: on SD txt2img).

Tolerance, on [0, 1] float images: max abs difference <= 1/256 (one bfloat16 step at pixel
values in [0.5, 1], one 8-bit level) and mean abs difference <= 5e-5. Measured on the CPU
(torch 2.14, AMD EPYC with avx512_bf16): 0.0 max and 0.0 mean in every case below, bfloat16
and float16. The closest wrong answers, measured over every pair of samplers' pipeline
outputs: bfloat16 at 64x64, dpmpp-2m against unipc in all four cases (max 1.4e-2 to 2.0e-2,
mean 1.9e-3 to 2.1e-3); float16 at 32x32 (SD txt2img), ddpm against euler-a (max 2.9e-3,
under the max bound, mean 3.75e-4, 7.5x the mean bound); another seed max ~0.85, mean ~0.17.
``test_the_tolerance_rejects_the_closest_sampler_and_another_seed`` checks they fail it.

What the parity needs, measured on the way:

- The same batch composition on both sides. Batched bfloat16 kernels round by batch size:
  one gouache batch of two SDXL items against two single diffusers calls differs by max
  7.8e-3 / mean 1.0e-3 (float32: ~2e-6), so each case here is one diffusers call.
- Modules in the same state: gouache loads with ``requires_grad_(False)``, and on the CPU a
  float16 conv over parameters that require grad takes another kernel (the VAE decode differs
  by 1.2e-3 before postprocessing; max 4.5e-3 / mean 6e-4 in pixels on SDXL), so the reference
  pipelines get the same ``requires_grad_(False)``.
- A contiguous control image: diffusers' ``prepare_image`` ends contiguous, gouache's ended
  channels-last (a PIL image is HWC), and the ControlNet's first conv rounds differently on
  it in bfloat16 (SDXL depth: max 7.8e-3 to 1.95e-2, mean up to 1.5e-3; fixed in
  ``unet.prepare_control``).

float16 runs on the CPU (every op exists in torch 2.14), but without oneDNN float16 support
(``torch.ops.mkldnn._is_mkldnn_fp16_supported()`` is False here: no AVX512-FP16/AMX-FP16)
every conv2d falls back to ``aten::_slow_conv2d_forward``, about 13x slower than bfloat16
(tiny SD UNet call at 64x64: 1.9 s against 0.14 s). So float16 runs at 32x32, the first item
of a case only, every sampler on SD txt2img and one sampler on each other case (``FLOAT16``);
bfloat16 runs every sampler on every case at 64x64 with batches of two or three images.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from gouache.config import ModelSpec, builtin_tiny_spec
from gouache.generation.loop.batch import BatchItem, BatchKey
from gouache.generation.loop.samplers import make_scheduler, samplers_of_kind
from gouache.generation.models import ModelRegistry

TOL_MAX = 1 / 256
TOL_MEAN = 5e-5
STEPS = 3
SAMPLERS = samplers_of_kind("eps")
CASES = [("sd", "txt2img"), ("sd", "depth"), ("sdxl", "txt2img"), ("sdxl", "depth")]
# float16: every sampler on SD txt2img (the samplers' arithmetic is the shared lanes' code),
# one of another kind on each other case.
FLOAT16 = [
    *((("sd", "txt2img"), sampler) for sampler in SAMPLERS),
    (("sd", "depth"), "unipc"),
    (("sdxl", "txt2img"), "dpmpp-2m-karras"),
    (("sdxl", "depth"), "ddim"),
]
# The closest pair of samplers per dtype (3 steps, over all pairs of the pipelines' outputs).
# bfloat16, 64x64, the same pair in every case: max/mean 2.0e-2/2.1e-3 (SD), 1.6e-2/2.0e-3
# (SD depth), 1.4e-2/1.9e-3 (SDXL), 1.6e-2/2.1e-3 (SDXL depth). float16, 32x32, SD txt2img:
# 2.9e-3/3.75e-4.
CLOSEST = [
    *(("bfloat16", case, ("dpmpp-2m", "unipc")) for case in CASES),
    ("float16", ("sd", "txt2img"), ("ddpm", "euler-a")),
]


@pytest.fixture(scope="module")
def half_registry(tiny_cache_dir: Path, tiny_model_dir: Path, tiny_xl_model_dir: Path) -> ModelRegistry:
    """builtin:tiny and the tiny SDXL, each as a user would ask for it in half precision."""
    specs: dict[str, ModelSpec] = {}
    for dtype in ("bfloat16", "float16"):
        specs[f"sd-{dtype}"] = builtin_tiny_spec().model_copy(update={"dtype": dtype})
        specs[f"sdxl-{dtype}"] = ModelSpec(
            path=str(tiny_xl_model_dir / "pipeline"),
            depth_controlnet=str(tiny_xl_model_dir / "controlnet-depth"),
            dtype=dtype,
        )
    return ModelRegistry(specs, cache_dir=tiny_cache_dir, device="cpu")


@pytest.fixture(scope="module")
def pipelines(tiny_model_dir: Path, tiny_xl_model_dir: Path) -> Callable[[str, str, str], Any]:
    """``(family, mode, dtype) -> diffusers pipeline`` from the same folders, built on first use."""
    built: dict[tuple[str, str, str], Any] = {}

    def get(family: str, mode: str, dtype: str) -> Any:
        key = (family, mode, dtype)
        if key not in built:
            built[key] = _pipeline(tiny_model_dir if family == "sd" else tiny_xl_model_dir, family, mode,
                                   getattr(torch, dtype))  # fmt: skip
        return built[key]

    return get


def _pipeline(root: Path, family: str, mode: str, dtype: torch.dtype) -> Any:
    import diffusers

    name = {"sd": "StableDiffusion", "sdxl": "StableDiffusionXL"}[family]
    kwargs: dict[str, Any] = {"torch_dtype": dtype, "local_files_only": True}
    if mode == "depth":
        name += "ControlNet"
        kwargs["controlnet"] = diffusers.ControlNetModel.from_pretrained(root / "controlnet-depth", **kwargs)
    if family == "sd":
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    pipe = getattr(diffusers, name + "Pipeline").from_pretrained(root / "pipeline", **kwargs)
    pipe.set_progress_bar_config(disable=True)
    for module in pipe.components.values():  # as gouache's registry leaves its modules
        if isinstance(module, torch.nn.Module):
            module.eval().requires_grad_(False)
    return pipe


def _depth_map(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8))  # resized to 64x64


# (prompt, negative prompt, seed, images) per item; each case is one diffusers call.
# SD txt2img: two images of one item; SDXL depth: empty negatives (zeros, force_zeros_for_empty_prompt).
ITEMS = {
    ("sd", "txt2img"): [("a red cat", "blurry", 7, 2), ("a blue dog", "", 11, 1)],
    ("sd", "depth"): [("a house", "fog", 5, 1), ("a tree", "", 6, 1)],
    ("sdxl", "txt2img"): [("a red cat", "blurry", 3, 1), ("a blue dog", "ugly", 4, 1)],
    ("sdxl", "depth"): [("a house", "", 9, 1), ("a tree", "", 10, 1)],
}
GUIDANCE = 5.0


def _size(dtype: str) -> int:
    return 32 if dtype == "float16" else 64  # float16: slow convs on the CPU


def _items(family: str, mode: str, dtype: str) -> list[tuple[str, str, int, int]]:
    """The case's items; float16 (slow convs on the CPU) runs the first one."""
    items = ITEMS[family, mode]
    return items if dtype != "float16" else items[:1]


def _ours(engine_cls: Any, registry: ModelRegistry, family: str, mode: str, dtype: str,
          sampler: str) -> np.ndarray:  # fmt: skip
    model = f"{family}-{dtype}"
    assert registry.get(model).dtype == getattr(torch, dtype)
    assert registry.get(model).denoiser.dtype == getattr(torch, dtype)
    key = BatchKey(model, mode, _size(dtype), _size(dtype), STEPS, sampler, GUIDANCE)
    items = [
        BatchItem(str(n), prompt, negative, seed=seed, count=count,
                  control_image=_depth_map(n + 1) if mode == "depth" else None)  # fmt: skip
        for n, (prompt, negative, seed, count) in enumerate(_items(family, mode, dtype))
    ]
    results = engine_cls(registry).generate(key, items)
    assert all(result.ok for result in results), [result.error for result in results]
    return np.stack([image for result in results for image in result.images])


def _reference(pipe: Any, registry: ModelRegistry, family: str, mode: str, dtype: str,
               sampler: str, seed_offset: int = 0) -> np.ndarray:  # fmt: skip
    items = _items(family, mode, dtype)
    prompts = [prompt for prompt, _, _, count in items for _ in range(count)]
    negatives = [negative for _, negative, _, count in items for _ in range(count)]
    seeds = [seed + seed_offset + k for _, _, seed, count in items for k in range(count)]
    kwargs: dict[str, Any] = {}
    if any(negatives):
        kwargs["negative_prompt"] = negatives
    if mode == "depth":
        kwargs["image"] = [_depth_map(n + 1) for n, item in enumerate(items) for _ in range(item[3])]
    pipe.scheduler = make_scheduler(sampler, registry.get(f"{family}-{dtype}").scheduler_config)
    return pipe(
        prompts, num_inference_steps=STEPS, guidance_scale=GUIDANCE, height=_size(dtype), width=_size(dtype),
        generator=[torch.Generator("cpu").manual_seed(seed) for seed in seeds], output_type="np",
        **kwargs,
    ).images  # fmt: skip


def _gap(ours: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    assert ours.shape == reference.shape
    diff = np.abs(ours.astype(np.float64) - reference.astype(np.float64))
    return float(diff.max()), float(diff.mean())


def _within(gap: tuple[float, float]) -> bool:
    return gap[0] <= TOL_MAX and gap[1] <= TOL_MEAN


def _check(family: str, mode: str, dtype: str, sampler: str, registry: ModelRegistry,
           pipelines: Any, engine_cls: Any) -> None:  # fmt: skip
    ours = _ours(engine_cls, registry, family, mode, dtype, sampler)
    reference = _reference(pipelines(family, mode, dtype), registry, family, mode, dtype, sampler)
    assert np.isfinite(ours).all() and ours.std() > 0.01  # a real image, not a constant
    gap = _gap(ours, reference)
    assert _within(gap), f"{family} {mode} {dtype} {sampler}: max {gap[0]:.2e} mean {gap[1]:.2e}"


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize(("family", "mode"), CASES)
def test_bfloat16_matches_the_pipeline(family, mode, sampler, half_registry, pipelines, float_engine_cls):
    _check(family, mode, "bfloat16", sampler, half_registry, pipelines, float_engine_cls)


@pytest.mark.parametrize(("case", "sampler"), FLOAT16, ids=[f"{f}-{m}-{s}" for (f, m), s in FLOAT16])
def test_float16_matches_the_pipeline(case, sampler, half_registry, pipelines, float_engine_cls):
    _check(*case, "float16", sampler, half_registry, pipelines, float_engine_cls)


@pytest.mark.parametrize(("dtype", "case", "pair"), CLOSEST, ids=[f"{d}-{f}-{m}" for d, (f, m), _ in CLOSEST])
def test_the_tolerance_rejects_the_closest_sampler_and_another_seed(
    dtype, case, pair, half_registry, pipelines, float_engine_cls
):
    """The bound is tight enough that the nearest wrong answers fail it, by a margin."""
    (sampler, closest), pipe = pair, pipelines(*case, dtype)
    ours = _ours(float_engine_cls, half_registry, *case, dtype, sampler)
    assert _within(_gap(ours, _reference(pipe, half_registry, *case, dtype, sampler)))
    wrong_sampler = _gap(ours, _reference(pipe, half_registry, *case, dtype, closest))
    wrong_seed = _gap(ours, _reference(pipe, half_registry, *case, dtype, sampler, 100))
    assert not _within(wrong_sampler) and wrong_sampler[1] > 5 * TOL_MEAN, wrong_sampler
    assert wrong_seed[1] > 1000 * TOL_MEAN and wrong_seed[0] > 10 * TOL_MAX, wrong_seed

"""Image-to-image lanes against diffusers' img2img pipelines, and mixed with text-to-image.

An image-to-image lane starts at index ``steps - int(steps * strength)`` from its image's VAE
posterior sampled and noised by its own generator and scheduler; the results must equal
``StableDiffusionImg2ImgPipeline`` / ``StableDiffusionXLImg2ImgPipeline`` (< 1e-4 on [0, 1]
images, far inside the 2/255 target) and lanes of both kinds must share steps without changing
each other's results.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gouache.errors import InvalidRequest
from gouache.generation.loop.batch import BatchItem, BatchKey, LaneSpec, ShapeKey
from gouache.generation.loop.samplers import make_scheduler

TOL = 1e-4
STEPS = 4


def _picture(seed: int, size: tuple[int, int] = (64, 64)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _gouache(engine, key: BatchKey, items: list[BatchItem]) -> np.ndarray:
    results = engine.generate(key, items)
    assert all(result.ok for result in results), [r.error for r in results]
    return np.stack([image for result in results for image in result.images])


@pytest.mark.parametrize(("sampler", "strength"),
                         [("ddim", 0.6), ("euler-a", 0.5), ("dpmpp-2m-karras", 0.75),
                          ("euler", 1.0), ("heun", 0.5)])  # fmt: skip
def test_sd_img2img_matches_diffusers(sampler, strength, tiny_model_dir, registry, float_engine_cls):
    from diffusers import StableDiffusionImg2ImgPipeline

    model = registry.get("builtin:tiny")
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(tiny_model_dir / "pipeline",
                                                          local_files_only=True)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler(sampler, model.scheduler_config)
    init = _picture(1)
    key = BatchKey("builtin:tiny", "txt2img", 64, 64, STEPS, sampler, 5.0, denoise=strength)
    ours = _gouache(float_engine_cls(registry), key,
                    [BatchItem("a", "a red fox", "blurry", seed=3, init_image=init)])  # fmt: skip
    reference = pipe("a red fox", image=init, strength=strength, negative_prompt="blurry",
                     num_inference_steps=STEPS, guidance_scale=5.0,
                     generator=torch.Generator("cpu").manual_seed(3), output_type="np").images  # fmt: skip
    assert ours.shape == reference.shape == (1, 64, 64, 3)
    assert np.abs(ours - reference).max() < TOL


@pytest.mark.parametrize("sampler", ["ddim", "euler-a"])
def test_sdxl_img2img_matches_diffusers(sampler, tiny_xl_model_dir, registry, float_engine_cls):
    from diffusers import StableDiffusionXLImg2ImgPipeline

    model = registry.get("tiny-xl")
    pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(tiny_xl_model_dir / "pipeline",
                                                            local_files_only=True)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler(sampler, model.scheduler_config)
    init = _picture(2)
    key = BatchKey("tiny-xl", "txt2img", 64, 64, STEPS, sampler, 5.0, denoise=0.6)
    ours = _gouache(float_engine_cls(registry), key,
                    [BatchItem("a", "a red fox", "blurry", seed=5, init_image=init)])  # fmt: skip
    reference = pipe("a red fox", image=init, strength=0.6, negative_prompt="blurry",
                     num_inference_steps=STEPS, guidance_scale=5.0,
                     generator=torch.Generator("cpu").manual_seed(5), output_type="np").images  # fmt: skip
    assert np.abs(ours - reference).max() < TOL


def test_the_image_matters_and_strength_keeps_it_closer(registry, float_engine_cls):
    """Another image gives another result, and more so at a low strength than a high one."""
    engine = float_engine_cls(registry)

    def run(strength: float, image: Image.Image) -> np.ndarray:
        key = BatchKey("builtin:tiny", "txt2img", 64, 64, 10, "ddim", 5.0, denoise=strength)
        return _gouache(engine, key, [BatchItem("a", "a fox", seed=1, init_image=image)])[0]

    a, b = _picture(4), _picture(5)
    subtle = np.abs(run(0.2, a) - run(0.2, b)).mean()
    strong = np.abs(run(0.9, a) - run(0.9, b)).mean()
    assert subtle > strong > 1e-3


@pytest.mark.parametrize("sampler", ["euler-a", "dpmpp-2m-karras"])
def test_mixed_img2img_and_txt2img_lanes_equal_each_alone(sampler, registry, float_running_cls):
    """One running batch: a text-to-image item and image-to-image items at two strengths,
    one joining mid-way, share denoiser calls and each equals its run alone (< 1e-4)."""
    shape = ShapeKey("builtin:tiny", 64, 64)
    txt = (BatchItem("t", "a cat", "blurry", seed=1, count=2), LaneSpec(STEPS, sampler, 5.0))
    half = (BatchItem("h", "a fox", "", seed=2, init_image=_picture(6)),
            LaneSpec(STEPS, sampler, 5.0, denoise=0.5))  # fmt: skip
    most = (BatchItem("m", "a dog", "", seed=3, count=2, init_image=_picture(7)),
            LaneSpec(STEPS, "ddim", 3.0, denoise=0.75))  # fmt: skip

    def alone(item, spec):
        batch = float_running_cls(registry, shape)
        batch.admit(item, spec)
        (result,) = batch.run()
        return np.stack(result.images)

    batch = float_running_cls(registry, shape)
    batch.admit(*txt)
    batch.admit(*half)
    results = {r.item_id: r for r in batch.step()}
    assert batch.stats.lanes == 3  # the image lane shares the first call
    batch.admit(*most)
    while len(batch):
        results.update({r.item_id: r for r in batch.step()})
    for item, spec in (txt, half, most):
        together = np.stack(results[item.item_id].images)
        assert np.abs(together - alone(item, spec)).max() < TOL


def test_progress_counts_the_skipped_steps(registry, float_running_cls):
    batch = float_running_cls(registry, ShapeKey("builtin:tiny", 64, 64))
    batch.admit(BatchItem("a", "a fox", seed=1, init_image=_picture(8)),
                LaneSpec(10, "ddim", 5.0, denoise=0.3))  # fmt: skip
    batch.step()
    assert batch.progress() == {"a": (8, 10)}  # 7 skipped + 1 run


@pytest.mark.parametrize(("strength", "words"), [(0.0, "0 to 1"), (1.5, "0 to 1"),
                                                 (0.05, "at least 0.10")])  # fmt: skip
def test_bad_strength_is_refused_before_any_work(strength, words, registry, float_running_cls):
    batch = float_running_cls(registry, ShapeKey("builtin:tiny", 64, 64))
    item = BatchItem("a", "a fox", seed=1, init_image=_picture(8))
    with pytest.raises(InvalidRequest, match=words):
        batch.admit(item, LaneSpec(10, "ddim", 5.0, denoise=strength))
    assert len(batch) == 0


def test_an_encode_out_of_memory_fails_that_item_alone(registry, float_running_cls):
    """The VAE encode runs behind the decode's out-of-memory rule: tiled, then the item alone."""
    tiled: list[bool] = []

    def fault(stage, item_ids):
        if stage == "encode":
            tiled.append(bool(tiled))
            raise torch.OutOfMemoryError("test")

    batch = float_running_cls(registry, ShapeKey("builtin:tiny", 64, 64), fault=fault)
    batch.admit(BatchItem("t", "a cat", seed=1), LaneSpec(2, "ddim", 5.0))
    batch.admit(BatchItem("i", "a fox", seed=1, init_image=_picture(9)),
                LaneSpec(2, "ddim", 5.0, denoise=0.5))  # fmt: skip
    results = {r.item_id: r for r in batch.run()}
    assert tiled == [False, True]  # whole, then tiled, then the item failed alone
    assert results["t"].ok and len(results["t"].images) == 1
    assert results["i"].error is not None and not results["i"].images


@pytest.mark.parametrize("row_budget", [32, 2])
def test_tiles_of_one_canvas_agree_as_they_denoise(row_budget, registry, float_running_cls):
    """MultiDiffusion in the one loop: two overlapping tiles of a 96x64 canvas (items with a
    ``Region``) step together even when the row budget takes one lane a step (2 rows: CFG),
    their latents are equal where they overlap after every step, and each image is its crop
    of one decode of the canvas. The same tiles without regions disagree there."""
    from gouache.generation.loop.batch import Region

    whole = _picture(11, (96, 64))
    boxes = [(0, 0, 64, 64), (32, 0, 96, 64)]

    def tiles(region: bool) -> list[BatchItem]:
        return [BatchItem(f"t{n}", "a fox", "", seed=5, init_image=whole.crop(box),
                          region=Region("c", box, (96, 64)) if region else None)
                for n, box in enumerate(boxes)]  # fmt: skip

    spec = LaneSpec(STEPS, "euler-a", 5.0, denoise=0.75)
    batch = float_running_cls(registry, ShapeKey("builtin:tiny", 64, 64), row_budget=row_budget)
    for item in tiles(True):
        batch.admit(item, spec)
    results, checked = {}, 0
    while len(batch):
        results.update({r.item_id: r for r in batch.step()})
        lanes = sorted([*batch._lanes, *batch._finished], key=lambda lane: lane.item.item_id)
        if len(lanes) == 2 and lanes[0].i == lanes[1].i:
            shift = lanes[0].latents.shape[-1] // 2  # the tiles overlap by half
            a, b = lanes[0].latents[..., shift:], lanes[1].latents[..., :shift]
            assert torch.equal(a, b)
            checked += 1
        else:
            assert len(lanes) < 2 or abs(lanes[0].i - lanes[1].i) == 1  # never more than a step apart
    assert checked >= 2
    a, b = (results[f"t{n}"].images[0] for n in range(2))
    assert np.abs(a[:, 32:] - b[:, :32]).max() < 1e-6  # crops of one picture

    apart = float_running_cls(registry, ShapeKey("builtin:tiny", 64, 64), row_budget=row_budget)
    for item in tiles(False):
        apart.admit(item, spec)
    a, b = (r.images[0] for r in sorted(apart.run(), key=lambda r: r.item_id))
    assert np.abs(a[:, 32:] - b[:, :32]).max() > 1e-2

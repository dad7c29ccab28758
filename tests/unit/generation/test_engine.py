"""Engine behaviour beyond parity: batching, cancellation, frames, progress, OOM, fatal errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gouache.errors import InvalidRequest, NotFound, ResourceExhausted
from gouache.generation.loop.batch import BatchItem, BatchKey
from gouache.generation.loop.engine import Engine, FatalDeviceError

TOL = 1e-4  # float [0, 1] images; batch-vs-alone differences measured ~1e-6


def key(sampler: str = "euler-a", steps: int = 4, model: str = "builtin:tiny", **kw) -> BatchKey:
    return BatchKey(model, kw.pop("pipeline", "txt2img"), 64, 64, steps, sampler, 5.0, **kw)


ITEMS = [
    BatchItem("a", "a red cat", "blurry", seed=1),
    BatchItem("b", "a blue dog", "", seed=2, count=2),
    BatchItem("c", "a green owl", "dark", seed=3),
]


def arrays(results) -> dict[str, np.ndarray]:
    return {r.item_id: np.stack(r.images) for r in results if r.images}


@pytest.mark.parametrize("sampler", ["euler-a", "dpmpp-2m", "ddpm"])
def test_batch_equals_each_item_alone(sampler, registry, float_engine_cls):
    engine = float_engine_cls(registry)
    together = arrays(engine.generate(key(sampler), ITEMS))
    for item in ITEMS:
        (alone,) = engine.generate(key(sampler), [item])
        assert len(alone.images) == item.count
        assert np.abs(np.stack(alone.images) - together[item.item_id]).max() < TOL
    # Different seeds and prompts really give different images.
    assert np.abs(together["a"][0] - together["c"][0]).max() > 0.05
    assert np.abs(together["b"][0] - together["b"][1]).max() > 0.05


def test_returns_pil_images_deterministically(registry):
    engine = Engine(registry)
    first = engine.generate(key("ddim", steps=2), ITEMS[:2])
    again = engine.generate(key("ddim", steps=2), ITEMS[:2])
    assert [len(r.images) for r in first] == [1, 2]
    image = first[0].images[0]
    assert isinstance(image, Image.Image) and image.size == (64, 64) and image.mode == "RGB"
    for one, two in zip(first, again, strict=True):
        for x, y in zip(one.images, two.images, strict=True):
            assert np.array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize(("sampler", "steps"), [("ddim", 4), ("heun", 3)])
def test_progress_is_reported_once_per_step(sampler, steps, registry):
    seen: list[tuple[int, int]] = []
    Engine(registry).generate(
        key(sampler, steps=steps), ITEMS[:1], on_step=lambda d, t: seen.append((d, t))
    )
    assert seen == [(i, steps) for i in range(1, steps + 1)]


def test_cancelled_item_leaves_and_batch_mates_finish(registry, float_engine_cls):
    engine = float_engine_cls(registry)
    alone = {item.item_id: engine.generate(key(), [item])[0] for item in (ITEMS[0], ITEMS[2])}
    progress: list[int] = []
    asked: list[str] = []

    def should_stop(item_id: str) -> bool:
        asked.append(item_id)
        return item_id == "b" and len(progress) >= 2

    results = engine.generate(
        key(), ITEMS, on_step=lambda d, t: progress.append(d), should_stop=should_stop
    )
    by_id = {r.item_id: r for r in results}
    assert by_id["b"].cancelled and by_id["b"].images == [] and by_id["b"].error is None
    assert not by_id["a"].cancelled and not by_id["c"].cancelled
    for item_id, solo in alone.items():
        assert np.abs(by_id[item_id].images[0] - solo.images[0]).max() < TOL
    assert asked.count("b") == 3  # checked at steps 1, 2, 3; gone after that
    assert asked.count("a") == 4


def test_cancelling_everything_stops_without_decoding(registry):
    decoded: list[str] = []
    engine = Engine(registry, fault=lambda stage, ids: decoded.append(stage))
    results = engine.generate(key(), ITEMS, should_stop=lambda item_id: True)
    assert all(r.cancelled and not r.images for r in results)
    assert set(decoded) <= {"prompt"}  # the prompts were encoded at admit; nothing denoised or decoded


@pytest.mark.parametrize("model_name", ["builtin:tiny", "tiny-preview"])
def test_frames_every_k_steps_end_with_the_final_image(model_name, registry, monkeypatch):
    model = registry.get(model_name)
    decoder = model.preview_decoder or model.vae
    calls: list[int] = []
    real_decode = decoder.decode
    monkeypatch.setattr(
        decoder, "decode", lambda z, **kw: calls.append(len(z)) or real_decode(z, **kw)
    )
    items = [
        BatchItem("gif", "a cat", seed=1, count=2, frames_every=2),
        BatchItem("still", "a dog", seed=2),
    ]
    results = Engine(registry).generate(key("ddim", steps=5, model=model_name), items)
    gif, still = results
    assert still.frames == []
    assert len(gif.frames) == 2 and [len(f) for f in gif.frames] == [3, 3]  # steps 2, 4, final
    for frames, image in zip(gif.frames, gif.images, strict=True):
        assert frames[-1] is image
        assert not np.array_equal(np.asarray(frames[0]), np.asarray(image))
    # Intermediate frames: two decodes of the two gif rows only (the final decode is the VAE's).
    expected = [2, 2] if model.preview_decoder is not None else [2, 2, 3]
    assert calls == expected


def test_split_in_halves_on_oom_gives_the_same_images(registry, float_engine_cls):
    calls: list[list[str]] = []

    def fault(stage: str, ids) -> None:
        if stage == "denoiser":
            calls.append(list(ids))
        if len(set(ids)) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    expected = arrays(float_engine_cls(registry).generate(key(), ITEMS))
    results = float_engine_cls(registry, fault=fault).generate(key(), ITEMS)
    assert all(r.ok for r in results)
    for item_id, images in arrays(results).items():
        assert np.abs(images - expected[item_id]).max() < TOL
    # The first step tries every lane, then halves of lanes down to what fits ...
    assert calls[:5] == [["a", "b", "b", "c"], ["a", "b"], ["a"], ["b"], ["b", "c"]]
    # ... and the budget it learnt holds for the later steps: one lane a call, none retried.
    later = calls[7:]
    assert later and all(len(ids) == 1 for ids in later) and len(later) == 4 * 3


def test_item_that_never_fits_is_resource_exhausted_alone(registry):
    tried: list[tuple[str, ...]] = []

    def fault(stage: str, ids) -> None:
        if stage == "denoiser" and "b" in ids:  # the text encoders: tests/unit/generation/test_oom_sites.py
            tried.append(tuple(dict.fromkeys(ids)))
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    results = Engine(registry, fault=fault).generate(key(), ITEMS)
    by_id = {r.item_id: r for r in results}
    assert isinstance(by_id["b"].error, ResourceExhausted)
    assert "out of memory" in by_id["b"].error.message and by_id["b"].images == []
    assert by_id["a"].ok and len(by_id["a"].images) == 1
    assert by_id["c"].ok and len(by_id["c"].images) == 1
    # Halves of the lanes, then b's lanes alone; after its first step b is gone.
    assert tried == [("a", "b", "c"), ("a", "b"), ("b",), ("b", "c"), ("b",)]


@pytest.mark.parametrize(
    "message",
    ["CUDA error: an illegal memory access was encountered", "device-side assert triggered"],
)
def test_sticky_device_errors_are_fatal(message, registry):
    def fault(stage: str, ids) -> None:
        raise RuntimeError(message)

    with pytest.raises(FatalDeviceError):
        Engine(registry, fault=fault).generate(key(), ITEMS[:1])


def test_other_runtime_errors_are_not_fatal(registry):
    def fault(stage: str, ids) -> None:
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch") as info:
        Engine(registry, fault=fault).generate(key(), ITEMS[:1])
    assert not isinstance(info.value, FatalDeviceError)


def test_unknown_sampler_and_model_are_user_errors(registry):
    with pytest.raises(InvalidRequest, match="euler-a"):
        Engine(registry).generate(key("k_euler_magic"), ITEMS[:1])
    with pytest.raises(NotFound, match="builtin:tiny"):
        Engine(registry).generate(key(model="sd-9000"), ITEMS[:1])


def test_depth_needs_a_control_image_and_a_controlnet(registry):
    depth = Image.new("RGB", (64, 64), (128, 128, 128))
    items = [
        BatchItem("with", "a cat", seed=1, control_image=depth),
        BatchItem("without", "a dog", seed=2),
    ]
    with_map, without_map = Engine(registry).generate(key("ddim", steps=2, pipeline="depth"), items)
    assert with_map.ok and len(with_map.images) == 1
    assert isinstance(without_map.error, InvalidRequest)
    with pytest.raises(InvalidRequest, match="no depth ControlNet"):
        Engine(registry).generate(
            key("ddim", steps=2, pipeline="depth", model="tiny-preview"), items[:1]
        )


def test_sdxl_depth_batch_runs_and_the_map_matters(registry, float_engine_cls):
    engine = float_engine_cls(registry)
    rng = np.random.default_rng(0)
    maps = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(2)]
    items = [BatchItem(f"i{n}", "a cat", seed=1, control_image=m) for n, m in enumerate(maps)]
    results = engine.generate(key("euler", steps=2, model="tiny-xl", pipeline="depth"), items)
    first, second = (r.images[0] for r in results)
    assert first.shape == (64, 64, 3)
    assert np.abs(first - second).max() > 1e-3  # same seed and prompt: only the map differs

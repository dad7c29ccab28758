"""Out of memory at every GPU call site fails only what cannot fit; other users' jobs finish.

Each site is injected twice: ``torch.OutOfMemoryError`` and the plain ``RuntimeError`` cuBLAS
raises when its workspace allocation fails (``device.is_out_of_memory`` counts both).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gouache.errors import ResourceExhausted
from gouache.generation.loop.batch import BatchItem, LaneSpec, ShapeKey
from gouache.generation.loop.device import FatalDeviceError, guarded, is_out_of_memory, is_sticky

SD = ShapeKey("builtin:tiny", 64, 64)
SPEC = LaneSpec(3, "ddim", 5.0)
ERRORS = {
    "torch": lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB"),
    "cublas": lambda: RuntimeError(
        "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"
    ),
}


@pytest.fixture(params=sorted(ERRORS))
def oom(request):
    return ERRORS[request.param]


def _items(frames: int = 0) -> list[tuple[BatchItem, str]]:
    return [(BatchItem("mine", "a red cat", seed=1, count=2, frames_every=frames), "me"),
            (BatchItem("theirs", "a blue dog", seed=2, frames_every=frames), "them")]  # fmt: skip


def _run(batch, items) -> dict:
    for item, user in items:
        batch.admit(item, SPEC, user=user)
    return {r.item_id: r for r in batch.run()}


def test_the_predicates():
    assert is_out_of_memory(ERRORS["torch"]()) and is_out_of_memory(ERRORS["cublas"]())
    assert is_out_of_memory(RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"))
    assert not is_out_of_memory(RuntimeError("shapes cannot be multiplied"))
    assert not is_sticky(ERRORS["cublas"]())
    for text in ("CUDA error: unspecified launch failure", "CUDA error: misaligned address",
                 "CUDA error: uncorrectable ECC error encountered",
                 "CUDA error: an illegal memory access was encountered"):  # fmt: skip
        assert is_sticky(RuntimeError(text)), text
    assert is_sticky(torch.AcceleratorError("CUDA error: whatever the driver says"))
    assert not is_sticky(ValueError("CUDA error: unspecified launch failure"))


def test_out_of_memory_in_the_text_encoders_fails_that_item_alone(registry, float_running_cls, oom):
    def fault(stage, ids):
        if stage == "prompt" and "mine" in ids:
            raise oom()

    batch = float_running_cls(registry, SD, fault=fault)
    with pytest.raises(ResourceExhausted, match="encoding this prompt"):
        batch.admit(*_items()[0][:1], SPEC, user="me")
    assert len(batch) == 0  # left as it was
    results = _run(batch, _items()[1:])
    assert results["theirs"].ok


def test_a_passing_out_of_memory_in_the_text_encoders_is_retried(registry, float_running_cls, oom):
    raised: list[str] = []

    def fault(stage, ids):
        if stage == "prompt" and not raised:
            raised.append(ids[0])
            raise oom()

    results = _run(float_running_cls(registry, SD, fault=fault), _items())
    assert raised == ["mine"] and results["mine"].ok and results["theirs"].ok


def test_the_denoiser_splits_on_a_cublas_allocation_failure(registry, float_running_cls, oom):
    def fault(stage, ids):
        if stage == "denoiser" and len(ids) > 1:
            raise oom()

    batch = float_running_cls(registry, SD, fault=fault)
    results = _run(batch, _items())
    assert all(r.ok for r in results.values()) and batch.row_budget == 2  # one CFG lane


def test_a_final_decode_is_retried_per_lane_and_fails_only_what_never_fits(
    registry, float_running_cls, oom
):
    alone = _run(float_running_cls(registry, SD), _items())

    def fault(stage, ids):
        if stage == "decode" and (len(ids) > 1 or ids == ["mine"]):
            raise oom()

    batch = float_running_cls(registry, SD, decode_chunk=4, fault=fault)
    results = _run(batch, _items())
    assert isinstance(results["mine"].error, ResourceExhausted)
    assert results["theirs"].ok
    np.testing.assert_allclose(results["theirs"].images[0], alone["theirs"].images[0], atol=1e-4)


def test_a_decode_out_of_memory_never_reruns_the_denoising(registry, float_running_cls, oom):
    def fault(stage, ids):
        if stage == "decode" and len(ids) > 1:
            raise oom()

    batch = float_running_cls(registry, SD, decode_chunk=4, fault=fault)
    for item, user in _items():
        batch.admit(item, SPEC, user=user)
    calls = 0
    while len(batch):
        batch.step()
        calls += batch.stats.denoiser_calls
    assert calls == SPEC.steps  # one call per step, no step re-run


def test_frames_are_decoded_in_chunks_and_a_frame_that_never_fits_is_dropped(
    registry, float_running_cls, oom
):
    seen: list[int] = []

    def fault(stage, ids):
        if stage == "frames":
            seen.append(len(ids))
            if len(ids) > 1 or ids == ["mine"]:
                raise oom()

    batch = float_running_cls(registry, SD, decode_chunk=2, fault=fault)
    results = _run(batch, _items(frames=1))
    assert max(seen) <= 2  # never the three lanes in one VAE call
    assert results["mine"].ok and results["theirs"].ok  # a dropped frame fails nothing
    assert [len(f) for f in results["mine"].frames] == [1, 1]  # only the final image
    assert len(results["theirs"].frames[0]) == SPEC.steps  # two frames and the final image


def test_the_tiled_fallback_really_tiles_at_native_size(registry, monkeypatch):
    from gouache.generation.loop.decoding import decode

    model = registry.get(SD.model)
    tiles: list[tuple[int, ...]] = []
    real = type(model.vae).tiled_decode

    def spy(self, z, *args, **kwargs):
        tiles.append((self.tile_latent_min_size, *z.shape[-2:]))
        return real(self, z, *args, **kwargs)

    monkeypatch.setattr(type(model.vae), "tiled_decode", spy)
    latents = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        plain, tiled = decode(model, latents), decode(model, latents, tiled=True)
    assert tiles == [(16, 32, 32)] and tiled.shape == plain.shape
    assert model.vae.tile_latent_min_size == 32 and not model.vae.use_tiling  # restored


@pytest.mark.parametrize("site", ["safety", "estimator", "guarded"])
def test_the_gpu_calls_outside_the_loop_share_the_handling(site, oom, monkeypatch):
    calls: list[int] = []

    def flaky():
        calls.append(1)
        raise oom()

    with pytest.raises(ResourceExhausted):
        guarded(flaky, what="a test")
    assert len(calls) == 2  # retried once after freeing the cache
    with pytest.raises(FatalDeviceError):
        guarded(lambda: (_ for _ in ()).throw(RuntimeError("CUDA error: misaligned address")), what="x")


def test_the_budget_a_shape_learned_is_where_its_next_batch_starts(registry):
    from gouache.generation.loop.engine import Engine

    def fault(stage, ids):
        if stage == "denoiser" and len(ids) > 1:
            raise ERRORS["torch"]()

    engine = Engine(registry, fault=fault)
    first = engine.running_batch(SD, row_budget=16, decode_chunk=2)
    _run(first, _items())
    assert first.row_budget == 2 and engine.learned_budgets[SD] == 2
    assert engine.running_batch(SD, row_budget=16, decode_chunk=2).row_budget == 2
    assert engine.running_batch(ShapeKey(SD.model, 32, 32), row_budget=16, decode_chunk=2).row_budget == 16

"""RunningBatch under memory pressure and device faults, and who gets rows when they are short."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gouache.errors import ResourceExhausted
from gouache.generation.loop.batch import BatchItem, LaneSpec, ShapeKey
from gouache.generation.loop.engine import FatalDeviceError

TOL = 1e-4
SD = ShapeKey("builtin:tiny", 64, 64)
JOBS = [
    (BatchItem("a", "a red cat", "blurry", seed=1), LaneSpec(3, "euler-a", 5.0)),
    (BatchItem("b", "a blue dog", seed=2, count=2), LaneSpec(4, "dpmpp-2m", 1.0)),
    (BatchItem("c", "a green owl", seed=3), LaneSpec(2, "ddim", 7.0)),
]


def _run(batch):
    for job in JOBS:
        batch.admit(*job)
    return {r.item_id: r for r in batch.run()}


def test_oom_retries_the_step_in_smaller_chunks_and_shrinks_the_budget(registry, float_running_cls):
    calls: list[list[str]] = []

    def fault(stage: str, ids) -> None:
        if stage == "denoiser":
            calls.append(list(ids))
            if len(ids) > 2:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    expected = _run(float_running_cls(registry, SD))
    batch = float_running_cls(registry, SD, row_budget=32, fault=fault)
    results = _run(batch)
    assert all(r.ok for r in results.values())
    for item_id, result in results.items():
        assert np.abs(np.stack(result.images) - np.stack(expected[item_id].images)).max() <= TOL
    # 4 lanes, 6 rows: refused, then halves; the budget is now what fitted (3 rows).
    assert calls[:3] == [["a", "b", "c", "b"], ["a", "b"], ["c", "b"]]  # round robin by user
    assert batch.row_budget == 3
    assert all(len(ids) <= 2 for ids in calls[3:])  # later steps go straight to small chunks


def test_a_lane_that_never_fits_fails_alone(registry, float_running_cls):
    def fault(stage: str, ids) -> None:
        if stage == "denoiser" and "b" in ids:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    expected = _run(float_running_cls(registry, SD))
    results = _run(float_running_cls(registry, SD, fault=fault))
    assert isinstance(results["b"].error, ResourceExhausted) and results["b"].images == []
    assert "out of memory" in results["b"].error.message
    for item_id in ("a", "c"):
        assert results[item_id].ok
        assert np.abs(results[item_id].images[0] - expected[item_id].images[0]).max() <= TOL


@pytest.mark.parametrize("stage", ["prompt", "denoiser", "decode", "frames"])
@pytest.mark.parametrize("error", [
    RuntimeError("CUDA error: an illegal memory access was encountered"),
    RuntimeError("CUDA error: unspecified launch failure"),
    RuntimeError("CUDA error: misaligned address"),
    RuntimeError("CUDA error: uncorrectable ECC error encountered"),
    torch.AcceleratorError("CUDA error: an illegal instruction was encountered"),
])  # fmt: skip
def test_sticky_device_error_is_fatal_at_every_call_site(registry, float_running_cls, stage, error):
    def fault(at: str, ids) -> None:
        if at == stage:
            raise error

    batch = float_running_cls(registry, SD, fault=fault)
    with pytest.raises(FatalDeviceError):
        batch.admit(BatchItem("a", "a red cat", seed=1, frames_every=1), LaneSpec(2, "ddim", 5.0))
        batch.run()


def test_rows_go_round_robin_by_user_when_the_budget_is_full(registry, float_running_cls):
    batch = float_running_cls(registry, SD, row_budget=3)
    spec = LaneSpec(3, "ddim", 1.0)  # one row per lane, 3 image-steps per lane
    batch.admit(BatchItem("heavy", "a", seed=1, count=4), spec, user="h")
    batch.admit(BatchItem("light1", "b", seed=2), spec, user="l1")
    batch.admit(BatchItem("light2", "c", seed=3), spec, user="l2")
    assert batch.free_rows == 0
    batch.step()
    # FIFO would start three of heavy's lanes; fair shares give each user one lane per step.
    assert batch.stats.started == ["heavy", "light1", "light2"] and batch.stats.rows == 3
    retired: dict[str, int] = {}
    for k in range(2, 20):
        for result in batch.step():
            retired[result.item_id] = k
        if not len(batch):
            break
    assert retired["light1"] == retired["light2"] == 3 < retired["heavy"]


def test_a_decode_chunk_that_does_not_fit_is_retried_one_lane_at_a_time(
    registry, float_running_cls, monkeypatch
):
    family = registry.get(SD.model).family
    real = family.decode

    def decode(model, latents, tiled=False):
        if len(latents) == 2:  # b's two images decode together and never fit
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, latents, tiled)

    monkeypatch.setattr(family, "decode", decode)
    batch = float_running_cls(registry, SD, decode_chunk=2)
    results = _run(batch)
    assert results["a"].ok and results["b"].ok and results["c"].ok

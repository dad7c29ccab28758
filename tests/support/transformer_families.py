"""Shared by the transformer families' tests: a registry over a tiny folder, float images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gouache.config import ModelSpec
from gouache.generation.loop.batch import BatchItem, BatchKey, LaneSpec, ShapeKey
from gouache.generation.models import ModelRegistry

PIXEL_TOL = 2 / 255  # the issue's parity target against diffusers' pipeline
LANE_TOL = 1e-4  # a lane in a mixed batch against the same lane alone
SIZE = 32


def registry_for(folder: Path, cache: Path, **spec: object) -> ModelRegistry:
    """A CPU registry holding ``folder`` as model "m", loaded through ``from_pretrained``."""
    return ModelRegistry({"m": ModelSpec(path=str(folder), **spec)}, cache_dir=cache, device="cpu")


def ours(engine, items: list[BatchItem], steps: int, sampler: str, guidance: float) -> np.ndarray:
    key = BatchKey("m", "txt2img", SIZE, SIZE, steps, sampler, guidance)
    results = engine.generate(key, items)
    assert all(result.ok for result in results), [r.error for r in results]
    return np.stack([image for result in results for image in result.images])


def generators(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]


def mixed_equals_alone(registry: ModelRegistry, running_cls, engine_cls,
                       jobs: list[tuple[BatchItem, LaneSpec]], joins_at: dict[str, int]) -> int:
    """Run ``jobs`` in one running batch (some joining later); each equals itself alone.

    Returns the most rows one transformer call took (so a test can see the lanes shared it).
    """
    shape = ShapeKey("m", SIZE, SIZE)
    batch = running_cls(registry, shape)
    pending = {item.item_id: (item, spec) for item, spec in jobs}
    results, widest, k = {}, 0, 0
    while len(batch) or pending:
        for item_id in [i for i in pending if joins_at.get(i, 0) == k]:
            batch.admit(*pending.pop(item_id))
        k += 1
        for result in batch.step():
            results[result.item_id] = result
        widest = max(widest, batch.stats.rows)
    engine = engine_cls(registry)
    for item, spec in jobs:
        key = BatchKey("m", spec.pipeline, SIZE, SIZE, spec.steps, spec.sampler, spec.guidance,
                       spec.diversify)  # fmt: skip
        (solo,) = engine.generate(key, [item])
        got = results[item.item_id]
        assert got.ok and solo.ok
        diff = np.abs(np.stack(got.images) - np.stack(solo.images)).max()
        assert diff <= LANE_TOL, (item.item_id, diff)
    return widest

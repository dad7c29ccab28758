"""--strength is a per-row ControlNet conditioning scale: items with different strengths share
one batch, and each image equals the one its item makes alone."""

from __future__ import annotations

import numpy as np
from PIL import Image

from gouache.generation.loop.batch import BatchItem, BatchKey


def test_per_item_strength_in_one_batch(registry, float_engine_cls) -> None:  # noqa: ANN001
    engine = float_engine_cls(registry)
    rng = np.random.default_rng(1)
    depth = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    key = BatchKey("builtin:tiny", "depth", 64, 64, 2, "ddim", 5.0)
    items = [BatchItem(f"s{s}", "a cat", seed=4, control_image=depth, control_scale=s)
             for s in (0.0, 1.0, 2.0)]  # fmt: skip
    together = [r.images[0] for r in engine.generate(key, items)]
    alone = [engine.generate(key, [item])[0].images[0] for item in items]
    for a, b in zip(together, alone, strict=True):
        assert np.abs(a - b).max() < 1e-4
    assert np.abs(together[0] - together[1]).max() > 1e-4  # the scale reaches the ControlNet
    assert np.abs(together[1] - together[2]).max() > 1e-4


def test_per_item_strength_in_a_step_level_running_batch(registry, float_engine_cls, float_running_cls) -> None:  # noqa: ANN001
    from gouache.generation.loop.batch import LaneSpec, ShapeKey

    engine = float_engine_cls(registry)
    shape = ShapeKey("builtin:tiny", 64, 64)
    rng = np.random.default_rng(1)
    depth = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    spec = LaneSpec(2, "ddim", 5.0, "depth")
    items = [BatchItem(f"s{s}", "a cat", seed=4, control_image=depth, control_scale=s)
             for s in (0.0, 1.0, 2.0)]  # fmt: skip
    batch = float_running_cls(registry, shape)
    for item in items:
        batch.admit(item, spec)
    results = {}
    while len(batch):
        for result in batch.step():
            results[result.item_id] = result
    key = BatchKey("builtin:tiny", "depth", 64, 64, 2, "ddim", 5.0)
    for item in items:
        (solo,) = engine.generate(key, [item])
        assert np.abs(results[item.item_id].images[0] - solo.images[0]).max() < 1e-4
    assert np.abs(results["s0.0"].images[0] - results["s1.0"].images[0]).max() > 1e-4

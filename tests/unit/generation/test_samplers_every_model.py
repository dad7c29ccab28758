"""Every listed sampler runs on every shipped model family, in the engine and a running batch.

``dpmpp-2m-karras`` on builtin:demo (cosine schedule: its Karras timesteps repeat 998) used to
raise IndexError from 5 steps on, in diffusers' own pipeline as in ours: schedulers are now
stepped by index (``timed_scheduler`` pins the begin index to 0).
"""

from __future__ import annotations

import numpy as np
import pytest

from gouache.generation.loop.batch import BatchItem, BatchKey, LaneSpec, ShapeKey
from gouache.generation.loop.samplers import samplers_of_kind, timed_scheduler

SAMPLERS = samplers_of_kind("eps")  # the UNet models' (the flow samplers: test_families_*.py)

MODELS = [("builtin:demo", 32), ("builtin:tiny", 64), ("tiny-xl", 64)]
STEPS = 5


@pytest.fixture(scope="module")
def registries(demo_registry, registry):
    return {"builtin:demo": demo_registry, "builtin:tiny": registry, "tiny-xl": registry}


def _check(images) -> None:
    stack = np.stack(images)
    assert np.isfinite(stack).all()
    assert stack.min() >= 0 and stack.max() <= 1 and stack.std() > 0


@pytest.mark.parametrize(("model", "size"), MODELS)
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_engine_runs_every_sampler(sampler, model, size, registries, float_engine_cls):
    key = BatchKey(model, "txt2img", size, size, STEPS, sampler, 3.0)
    (result,) = float_engine_cls(registries[model]).generate(
        key, [BatchItem("a", "a red circle", seed=1)]
    )
    assert result.ok
    _check(result.images)


@pytest.mark.parametrize(("model", "size"), MODELS)
def test_one_running_batch_runs_every_sampler_at_once(model, size, registries, float_running_cls):
    batch = float_running_cls(registries[model], ShapeKey(model, size, size), row_budget=64)
    for n, sampler in enumerate(SAMPLERS):
        batch.admit(BatchItem(sampler, "a red circle", seed=n), LaneSpec(STEPS, sampler, 3.0))
    results = batch.run()
    assert sorted(r.item_id for r in results) == sorted(SAMPLERS)
    for result in results:
        assert result.ok, result.item_id
        _check(result.images)


def test_karras_timesteps_repeat_on_the_demo_model_and_still_step(demo_registry, float_engine_cls):
    config = demo_registry.get("builtin:demo").scheduler_config
    timesteps = timed_scheduler("dpmpp-2m-karras", config, 20).timesteps.tolist()
    assert len(set(timesteps)) < len(timesteps)  # the schedule that broke the lookup
    key = BatchKey("builtin:demo", "txt2img", 32, 32, 20, "dpmpp-2m-karras", 2.0)
    (result,) = float_engine_cls(demo_registry).generate(key, [BatchItem("a", "a red circle")])
    _check(result.images)

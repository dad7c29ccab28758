"""Flux.1 dev and schnell against diffusers' ``FluxPipeline`` on the same tiny folder.

The folders are built in code (``tiny_transformers.py``), saved with ``save_pretrained`` and
loaded back through the registry. Parity target: 2/255 per pixel (float32, 3 steps); measured
0.0 (the loop's arithmetic is the pipeline's, on the same batch composition).
"""

from __future__ import annotations

import numpy as np
import pytest
from diffusers import FluxPipeline

from gouache.errors import InvalidRequest
from gouache.generation.loop.batch import BatchItem, BatchKey, LaneSpec
from tests.support.transformer_families import (
    PIXEL_TOL,
    SIZE,
    generators,
    mixed_equals_alone,
    ours,
    registry_for,
)

ITEMS = [BatchItem("a", "a red cat", seed=5, count=2), BatchItem("b", "a blue dog", seed=9)]


def _pipeline(folder) -> FluxPipeline:
    pipe = FluxPipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize(("variant", "guidance"), [("flux-dev", 3.5), ("flux-schnell", 0.0)])
def test_flux_matches_flux_pipeline(variant, guidance, tiny_transformers, tmp_path, float_engine_cls):
    folder = tiny_transformers(variant)
    registry = registry_for(folder, tmp_path)
    got = ours(float_engine_cls(registry), ITEMS, 3, "flow-euler", guidance)
    reference = _pipeline(folder)(
        ["a red cat", "a red cat", "a blue dog"], num_inference_steps=3, guidance_scale=guidance,
        height=SIZE, width=SIZE, generator=generators(5, 6, 9), output_type="np",
    ).images  # fmt: skip
    assert got.shape == reference.shape == (3, SIZE, SIZE, 3)
    assert np.abs(got - reference).max() <= PIXEL_TOL
    assert registry.get("m").family.name == "flux"


def test_flux_dev_guidance_is_an_embedding_per_row(tiny_transformers, tmp_path, float_engine_cls):
    """Distilled guidance changes the image without an unconditional row."""
    registry = registry_for(tiny_transformers("flux-dev"), tmp_path)
    engine = float_engine_cls(registry)
    low, high = (ours(engine, ITEMS[:1], 2, "flow-euler", g) for g in (1.0, 6.0))
    assert np.abs(low - high).max() > 1e-3
    batch = engine.running_batch(BatchKey("m", "txt2img", SIZE, SIZE, 2, "flow-euler", 6.0).shape,
                                 row_budget=8, decode_chunk=1)  # fmt: skip
    assert batch.rows_for(ITEMS[0], LaneSpec(2, "flow-euler", 6.0)) == 2  # one row per image


def test_mixed_lanes_share_one_transformer_call(tiny_transformers, tmp_path, float_engine_cls, float_running_cls):
    """Lanes at different steps, step counts, guidance and samplers equal each alone."""
    registry = registry_for(tiny_transformers("flux-dev"), tmp_path)
    jobs = [
        (BatchItem("a", "a red cat", seed=1), LaneSpec(4, "flow-euler", 3.5)),
        (BatchItem("b", "a blue dog", seed=2, count=2), LaneSpec(2, "flow-euler", 1.0)),
        (BatchItem("c", "a green owl", seed=3), LaneSpec(3, "flow-euler-karras", 5.0)),
    ]
    widest = mixed_equals_alone(registry, float_running_cls, float_engine_cls, jobs, {"c": 1})
    assert widest == 4  # every lane's row in one call


def test_a_unet_sampler_is_refused_with_the_reason(tiny_transformers, tmp_path, float_engine_cls):
    registry = registry_for(tiny_transformers("flux-schnell"), tmp_path)
    with pytest.raises(InvalidRequest, match="flow-matching model.*flow-euler"):
        ours(float_engine_cls(registry), ITEMS[:1], 2, "dpmpp-2m", 0.0)


def test_depth_is_refused_without_a_controlnet(tiny_transformers, tmp_path, float_engine_cls):
    registry = registry_for(tiny_transformers("flux-schnell"), tmp_path)
    key = BatchKey("m", "depth", SIZE, SIZE, 2, "flow-euler", 0.0)
    with pytest.raises(InvalidRequest, match="ControlNet"):
        float_engine_cls(registry).generate(key, ITEMS[:1])

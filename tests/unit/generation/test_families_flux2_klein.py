"""Flux.2 Klein (base and step-distilled) against diffusers' ``Flux2KleinPipeline`` on the same
tiny folder (Qwen3 encoder, layers 9/18/27; the Flux.2 VAE with its batch-norm statistics).

Its guidance is real CFG, on for g > 1 and never for a distilled checkpoint; the shift depends on
the step count, so lanes of different step counts differ in their schedules too. Parity target
2/255 per pixel (float32, 3 steps).
"""

from __future__ import annotations

import numpy as np
import pytest
from diffusers import Flux2KleinPipeline

from gouache.generation.loop.batch import BatchItem, BatchKey, LaneSpec
from tests.support.transformer_families import (
    PIXEL_TOL,
    SIZE,
    generators,
    mixed_equals_alone,
    ours,
    registry_for,
)

ITEMS = [BatchItem("a", "a red cat", "blurry", seed=5, count=2),
         BatchItem("b", "a blue dog in a small house", "", seed=9)]  # fmt: skip


def _pipeline(folder) -> Flux2KleinPipeline:
    pipe = Flux2KleinPipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize(("variant", "guidance"),
                         [("flux2-klein", 4.0), ("flux2-klein", 1.0), ("flux2-klein-distilled", 4.0)])  # fmt: skip
def test_klein_matches_flux2_klein_pipeline(variant, guidance, tiny_transformers, tmp_path, float_engine_cls):
    """One image and --n 2; with CFG a given --no is the pipeline's ``negative_prompt_embeds``
    and an empty one its own "" negative."""
    folder = tiny_transformers(variant)
    registry = registry_for(folder, tmp_path)
    got = ours(float_engine_cls(registry), ITEMS, 3, "flow-euler", guidance)
    pipe = _pipeline(folder)
    negative, _ = pipe.encode_prompt(["blurry", "blurry", ""], device="cpu")
    reference = pipe(
        prompt=["a red cat", "a red cat", "a blue dog in a small house"], negative_prompt_embeds=negative,
        num_inference_steps=3, guidance_scale=guidance, height=SIZE, width=SIZE,
        generator=generators(5, 6, 9), output_type="np",
    ).images  # fmt: skip
    assert got.shape == reference.shape == (3, SIZE, SIZE, 3)
    assert np.abs(got - reference).max() <= PIXEL_TOL
    assert registry.get("m").family.name == "flux2-klein"


def test_cfg_runs_an_unconditional_row_except_on_a_distilled_klein(tiny_transformers, tmp_path, float_engine_cls):
    rows = {}
    for variant in ("flux2-klein", "flux2-klein-distilled"):
        registry = registry_for(tiny_transformers(variant), tmp_path / variant)
        batch = float_engine_cls(registry).running_batch(
            BatchKey("m", "txt2img", SIZE, SIZE, 2, "flow-euler", 4.0).shape, row_budget=8, decode_chunk=1)  # fmt: skip
        rows[variant] = [batch.rows_for(ITEMS[1], LaneSpec(2, "flow-euler", g)) for g in (1.0, 4.0)]
    assert rows == {"flux2-klein": [1, 2], "flux2-klein-distilled": [1, 1]}


def test_the_negative_prompt_changes_a_base_klein_image(tiny_transformers, tmp_path, float_engine_cls):
    engine = float_engine_cls(registry_for(tiny_transformers("flux2-klein"), tmp_path))
    plain, negated = (ours(engine, [BatchItem("a", "a red cat", no, seed=3)], 2, "flow-euler", 4.0)
                      for no in ("", "a blue dog"))  # fmt: skip
    assert np.abs(plain - negated).max() > 1e-3


def test_mixed_lanes_share_one_transformer_call(tiny_transformers, tmp_path, float_engine_cls, float_running_cls):
    """Lanes at different steps, step counts (so shifts), guidance (CFG on and off) and samplers,
    one joining a step later, each equal themselves alone."""
    registry = registry_for(tiny_transformers("flux2-klein"), tmp_path)
    jobs = [
        (BatchItem("a", "a red cat", "blurry", seed=1), LaneSpec(4, "flow-euler", 4.0)),
        (BatchItem("b", "a blue dog in a small house", seed=2, count=2), LaneSpec(2, "flow-euler", 1.0)),
        (BatchItem("c", "an owl", seed=3), LaneSpec(3, "flow-euler-karras", 2.5)),
    ]
    widest = mixed_equals_alone(registry, float_running_cls, float_engine_cls, jobs, {"c": 1})
    assert widest == 6  # a's two rows, b's two images, c's two rows in one call

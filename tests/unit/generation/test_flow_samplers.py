"""Every flow-matching sampler on every flow-matching family, against the family's own diffusers
pipeline with its scheduler configured as the sampler says (the scheduler keys are written out
here, not read from our table, so a wrong entry fails). Parity target 2/255 per pixel, 3 steps,
one image per prompt and ``--n 2``."""

from __future__ import annotations

import numpy as np
import pytest
from diffusers import Flux2KleinPipeline, FluxPipeline, StableDiffusion3Pipeline, ZImagePipeline

from gouache.generation.loop.batch import BatchItem
from gouache.generation.loop.samplers import samplers_of_kind
from tests.support.transformer_families import PIXEL_TOL, SIZE, generators, ours, registry_for

SCHEDULER_KEYS = {
    "flow-euler": {},
    "flow-euler-karras": {"use_karras_sigmas": True},
    "flow-euler-exponential": {"use_exponential_sigmas": True},
    "flow-euler-beta": {"use_beta_sigmas": True},
}
# variant -> (pipeline class, guidance, whether it takes a negative prompt)
FAMILIES = {
    "flux-dev": (FluxPipeline, 3.5, False),
    "sd3": (StableDiffusion3Pipeline, 5.0, True),
    "z-image": (ZImagePipeline, 3.0, True),
    "flux2-klein": (Flux2KleinPipeline, 4.0, True),
}
PROMPTS = ["a red cat", "a red cat", "a blue dog"]
NEGATIVES = ["blurry", "blurry", ""]


def test_every_flow_sampler_has_its_scheduler_keys_here() -> None:
    assert set(samplers_of_kind("flow")) == set(SCHEDULER_KEYS)


@pytest.mark.parametrize("sampler", sorted(set(SCHEDULER_KEYS) - {"flow-euler"}))
@pytest.mark.parametrize("variant", sorted(FAMILIES))
def test_a_flow_sampler_matches_the_pipeline_with_that_scheduler(variant, sampler, tiny_transformers, tmp_path,
                                                                 float_engine_cls) -> None:  # fmt: skip
    pipeline_cls, guidance, negative = FAMILIES[variant]
    folder = tiny_transformers(variant)
    registry = registry_for(folder, tmp_path)
    items = [BatchItem("a", "a red cat", "blurry" if negative else "", seed=5, count=2),
             BatchItem("b", "a blue dog", "", seed=9)]  # fmt: skip
    got = ours(float_engine_cls(registry), items, 3, sampler, guidance)
    pipe = pipeline_cls.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = pipe.scheduler.from_config(pipe.scheduler.config, **SCHEDULER_KEYS[sampler])
    kwargs = {}
    if negative and pipeline_cls is Flux2KleinPipeline:  # its negative is given as embeddings
        kwargs["negative_prompt_embeds"], _ = pipe.encode_prompt(NEGATIVES, device="cpu")
    elif negative:
        kwargs["negative_prompt"] = list(NEGATIVES)  # ZImagePipeline templates its lists in place
    reference = pipe(prompt=list(PROMPTS), num_inference_steps=3, guidance_scale=guidance, height=SIZE, width=SIZE,
                     generator=generators(5, 6, 9), output_type="np", **kwargs).images  # fmt: skip
    assert got.shape == reference.shape == (3, SIZE, SIZE, 3)
    assert np.abs(got - reference).max() <= PIXEL_TOL


def test_the_respaced_samplers_differ_from_flow_euler(tiny_transformers, tmp_path, float_engine_cls) -> None:
    """Each sampler changes the picture: the keys reach the scheduler the loop runs."""
    registry = registry_for(tiny_transformers("flux-dev"), tmp_path)
    engine = float_engine_cls(registry)
    images = {s: ours(engine, [BatchItem("a", "a red cat", seed=5)], 4, s, 3.5) for s in SCHEDULER_KEYS}
    for sampler in set(SCHEDULER_KEYS) - {"flow-euler"}:
        assert np.abs(images[sampler] - images["flow-euler"]).max() > 1e-3, sampler

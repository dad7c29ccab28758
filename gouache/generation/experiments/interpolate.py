"""Interpolation between two prompts and/or seeds: spherical interpolation (slerp) of the
initial noise, linear interpolation of the text embeddings, every frame denoised in one batch.

The engine draws its own noise and encodes its own prompts, so this runs diffusers'
``StableDiffusionPipeline`` over the loaded model's components with ``latents=`` and
``prompt_embeds=`` (gouache's engine equals that pipeline, ``tests/unit/generation/test_parity.py``).
Frame *k* draws its sampler noise from the generator of the nearer endpoint's seed, advanced
past the initial noise exactly as the engine's is: the first and last frames are the two
endpoint images generated alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from gouache.errors import InvalidRequest
from gouache.generation.loop.samplers import make_scheduler

if TYPE_CHECKING:
    from gouache.generation.loop.batch import BatchKey
    from gouache.generation.models import LoadedModel

__all__ = ["slerp", "weights", "interpolate"]


def slerp(a: torch.Tensor, b: torch.Tensor, t: float, dot_threshold: float = 0.9995) -> torch.Tensor:
    """Spherical interpolation between two noise tensors (linear when nearly parallel)."""
    if t <= 0:
        return a.clone()
    if t >= 1:
        return b.clone()
    fa, fb = a.flatten().double(), b.flatten().double()
    dot = float((fa @ fb) / (fa.norm() * fb.norm()))
    if abs(dot) > dot_threshold:
        return ((1 - t) * a.double() + t * b.double()).to(a.dtype)
    theta = torch.arccos(torch.tensor(dot, dtype=torch.float64))
    sin = torch.sin(theta)
    out = (torch.sin((1 - t) * theta) / sin) * a.double() + (torch.sin(t * theta) / sin) * b.double()
    return out.to(a.dtype)


def weights(frames: int) -> list[float]:
    return [k / (frames - 1) for k in range(frames)]


def _pipeline(model: LoadedModel, sampler: str) -> Any:
    from diffusers import StableDiffusionPipeline

    if model.family != "sd":
        raise InvalidRequest("/interpolate works with SD-family models for now.")
    pipe = StableDiffusionPipeline(
        vae=model.vae, text_encoder=model.text_encoders[0], tokenizer=model.tokenizers[0],
        unet=model.unet, scheduler=make_scheduler(sampler, model.scheduler_config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.inference_mode()
def interpolate(
    model: LoadedModel,
    key: BatchKey,
    prompts: tuple[str, str],
    seeds: tuple[int, int],
    frames: int,
    *,
    negative_prompt: str = "",
    output_type: str = "pil",
    batch: int = 16,
    on_step: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[Any]:
    """``frames`` images from (prompts[0], seeds[0]) to (prompts[1], seeds[1]), both included.

    Returns fewer frames (those finished) only if ``should_stop`` interrupted the run.
    """
    from diffusers.utils.torch_utils import randn_tensor

    pipe = _pipeline(model, key.sampler)
    device, dtype = model.device, model.dtype
    do_cfg = key.guidance > 1 and model.unet.config.time_cond_proj_dim is None
    shape = (1, model.unet.config.in_channels, key.height // model.vae_scale_factor,
             key.width // model.vae_scale_factor)  # fmt: skip
    embeds, negatives, noises = [], [], []
    for prompt, seed in zip(prompts, seeds, strict=True):
        cond, uncond = pipe.encode_prompt(prompt, device, 1, do_cfg, negative_prompt or None)
        embeds.append(cond)
        negatives.append(uncond)
        noises.append(randn_tensor(shape, generator=torch.Generator("cpu").manual_seed(seed),
                                   device=device, dtype=dtype))  # fmt: skip
    ws = weights(frames)
    out: list[Any] = []
    total_batches = -(-frames // batch)
    for b, start in enumerate(range(0, frames, batch)):
        chunk = ws[start : start + batch]
        generators = []
        for w in chunk:  # the nearer endpoint's stream, advanced past its initial noise
            g = torch.Generator("cpu").manual_seed(seeds[0] if w < 0.5 else seeds[1])
            randn_tensor(shape, generator=g, device=device, dtype=dtype)
            generators.append(g)
        latents = torch.cat([slerp(noises[0], noises[1], w) for w in chunk])
        prompt_embeds = torch.cat([(1 - w) * embeds[0] + w * embeds[1] for w in chunk])
        extra: dict[str, Any] = {}
        if do_cfg:
            extra["negative_prompt_embeds"] = torch.cat(
                [(1 - w) * negatives[0] + w * negatives[1] for w in chunk])

        def step_end(p: Any, i: int, t: Any, kw: dict[str, Any], _b: int = b) -> dict[str, Any]:
            if on_step is not None:
                on_step(_b * key.steps + i + 1, total_batches * key.steps)
            if should_stop is not None and should_stop():
                p._interrupt = True
            return kw

        result = pipe(
            prompt_embeds=prompt_embeds, latents=latents, generator=generators,
            num_inference_steps=key.steps, guidance_scale=key.guidance, height=key.height,
            width=key.width, output_type=output_type, callback_on_step_end=step_end, **extra,
        ).images  # fmt: skip
        if getattr(pipe, "_interrupt", False):
            return out
        out.extend(list(result))
    return out

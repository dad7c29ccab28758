"""Interpolation between two prompts and/or seeds: spherical interpolation (slerp) of the
initial noise, linear interpolation of the text embeddings, every frame a lane of one running
batch.

Each frame is a lane that carries its own initial noise and conditioning (``RunningBatch.admit``
with ``starts=`` and ``cond=``, as diffusers' pipelines take ``latents=`` and
``prompt_embeds=``), so frames share denoiser calls like any lanes, for any family. Frame *k*
draws its sampler noise from the generator of the nearer endpoint's seed, advanced past the
initial noise exactly as a lane's is: the first and last frames are the two endpoint images
generated alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from gouache.generation.loop.batch import BatchItem
from gouache.generation.loop.conditioning import lerp

if TYPE_CHECKING:
    from gouache.generation.loop.batch import BatchKey
    from gouache.generation.loop.running import RunningBatch

__all__ = ["slerp", "weights", "admit_frames", "interpolate"]


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


@torch.inference_mode()
def admit_frames(
    batch: RunningBatch,
    key: BatchKey,
    prompts: tuple[str, str],
    seeds: tuple[int, int],
    frames: int,
    *,
    negative_prompt: str = "",
    user: str = "interpolation",
    prefix: str = "frame",
) -> list[str]:
    """Admit ``frames`` lanes from (prompts[0], seeds[0]) to (prompts[1], seeds[1]), both
    included, into ``batch`` (a running batch of ``key``'s shape, shared with other lanes or not);
    returns their item ids (``<prefix>-<k>``) in frame order. Each frame is ``user``'s lane, so
    fairness charges its steps like any of that user's images."""
    from diffusers.utils.torch_utils import randn_tensor

    model, spec = batch.model, key.spec
    family = model.family
    cfg = batch.cfg(spec)
    shape = family.latent_shape(model, key.width, key.height)
    ends = [BatchItem(f"end-{n}", prompt, negative_prompt, seed=seed)
            for n, (prompt, seed) in enumerate(zip(prompts, seeds, strict=True))]  # fmt: skip
    conds = [family.prompt(model, [end], spec, cfg, key.width, key.height) for end in ends]
    noises = [randn_tensor(shape, generator=torch.Generator("cpu").manual_seed(end.seed),
                           device=model.device, dtype=model.dtype) for end in ends]  # fmt: skip
    ids = []
    for k, w in enumerate(weights(frames)):
        nearer = ends[0] if w < 0.5 else ends[1]
        item = BatchItem(f"{prefix}-{k}", nearer.prompt, negative_prompt, seed=nearer.seed)
        batch.admit(item, spec, user=user, cond=lerp(conds[0], conds[1], w),
                    starts=[slerp(noises[0], noises[1], w)])  # fmt: skip
        ids.append(item.item_id)
    return ids


@torch.inference_mode()
def interpolate(
    batch: RunningBatch,
    key: BatchKey,
    prompts: tuple[str, str],
    seeds: tuple[int, int],
    frames: int,
    *,
    negative_prompt: str = "",
    on_step: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[Any]:
    """``frames`` images from (prompts[0], seeds[0]) to (prompts[1], seeds[1]), both included,
    run to the end as lanes of ``batch`` (``gouache generate``; the worker admits the frames into
    its shared running batch with ``admit_frames`` instead).

    Returns fewer frames (none) only if ``should_stop`` interrupted the run.
    """
    ids = admit_frames(batch, key, prompts, seeds, frames, negative_prompt=negative_prompt)
    out: dict[str, Any] = {}
    while len(batch):
        if should_stop is not None and should_stop():
            return []
        for result in batch.step():
            if result.error is not None:  # a frame that does not fit even alone
                raise result.error
            out[result.item_id] = result.images[0]
        if on_step is not None:
            running = sum(done for done, _ in batch.progress().values())
            on_step(len(out) * key.steps + running, frames * key.steps)
    return [out[item_id] for item_id in ids]

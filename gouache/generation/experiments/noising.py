"""The forward process: the final image noised step by step by the model's own noise schedule,
then denoised again, as one sequence of frames with the timestep of each.

Forward diffusion is ``q(x_t | x_0)``: the final image is encoded by the model's VAE and
``DDPMScheduler.add_noise`` (the model's betas, from its ``scheduler_config``) mixes in the very
noise the image started from (the request's seed), at the noise levels the sampler passes
through on its way down. The denoising half is the engine's own frames (``frames_every``).
The sequence is ``image, lightly noised, ..., pure noise, ..., denoised, image``: its middle
frame is the most noised and its last frame is the final image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from gouache import messages
from gouache.generation.loop.samplers import make_scheduler

if TYPE_CHECKING:
    from PIL.Image import Image

    from gouache.generation.models import LoadedModel

__all__ = ["Process", "sampler_timesteps", "kept_steps", "noised", "process_frames"]


@dataclass
class Process:
    frames: list[Image]
    timesteps: list[int]  # the noise level of each frame (0: the clean image)

    @property
    def labels(self) -> list[str]:
        return [f"t={t}" for t in self.timesteps]


def sampler_timesteps(model: LoadedModel, sampler: str, steps: int) -> list[int]:
    scheduler = make_scheduler(sampler, model.scheduler_config)
    scheduler.set_timesteps(steps)
    return [int(round(float(t))) for t in scheduler.timesteps]


def kept_steps(steps: int, every: int) -> list[int]:
    """The steps after which the engine keeps a frame (``frames_every=every``), final excluded."""
    return [s for s in range(1, steps) if s % every == 0]


@torch.inference_mode()
def noised(model: LoadedModel, image: Image, timesteps: Sequence[int], seed: int) -> list[Image]:
    """``image`` forward-diffused to each of ``timesteps`` with the noise of ``seed``."""
    from diffusers import DDPMScheduler
    from diffusers.image_processor import VaeImageProcessor
    from diffusers.utils.torch_utils import randn_tensor

    from gouache.errors import ResourceExhausted
    from gouache.generation.loop.decoding import decode_each
    from gouache.generation.loop.device import guarded

    processor = VaeImageProcessor(vae_scale_factor=model.vae_scale_factor)
    family = model.family
    pixels = processor.preprocess(image.convert("RGB"))
    clean = guarded(lambda: family.encode_image(model, pixels), what="the --process frames")
    generator = torch.Generator("cpu").manual_seed(seed)
    noise = randn_tensor(tuple(clean.shape), generator=generator, device=model.device, dtype=clean.dtype)
    schedule = DDPMScheduler.from_config(dict(model.scheduler_config))
    levels = torch.tensor([min(int(t), schedule.config.num_train_timesteps - 1) for t in timesteps])
    latents = schedule.add_noise(clean.repeat(len(levels), 1, 1, 1), noise.repeat(len(levels), 1, 1, 1), levels)
    # The one decode path: chunks retried one at a time and tiled, the fp32 retry when not finite.
    frames = decode_each(model, list(latents.split(1)), 2)
    if any(frame is None for frame in frames):
        raise ResourceExhausted(messages.out_of_memory_in("the --process frames"))
    decoded = torch.cat([frame for frame in frames if frame is not None])
    return list(processor.postprocess(decoded, output_type="pil"))


def process_frames(
    model: LoadedModel,
    final: Image,
    denoising: Sequence[Image],
    *,
    sampler: str,
    steps: int,
    every: int,
    seed: int,
) -> Process:
    """``final`` noised up to the sampler's first timestep, then ``denoising`` (the engine's
    frames for ``frames_every=every``, ending with the final image) back down."""
    schedule = sampler_timesteps(model, sampler, steps)
    order = max(1, len(schedule) // steps)
    kept = kept_steps(steps, every)
    down = [schedule[min(s * order, len(schedule) - 1)] for s in kept]  # after s steps
    up = [*reversed(down), schedule[0]]
    frames = [final, *noised(model, final, up, seed), *list(denoising)[:-1], final]
    return Process(frames, [0, *up, *down, 0])

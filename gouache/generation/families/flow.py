"""What the flow-matching transformer families (Flux, SD3, Z-Image, Flux.2) share.

They are sampled by ``FlowMatchEulerDiscreteScheduler`` (sampler kind ``flow``), whose
timesteps are ``sigma * 1000``, so the loop's noise level ``t / num_train_timesteps`` (guidance
intervals, CADS) is the flow's sigma; their initial latents are the seed's noise as drawn (no
``init_noise_sigma``); the VAE reads ``latents / scaling_factor + shift_factor``. ``mu`` is
diffusers 0.42.1's ``calculate_shift`` (pipeline_flux.py), the resolution-dependent shift of the
sigmas from the image's token count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from gouache.generation.families.base import Family
from gouache.generation.loop.conditioning import Conditioning

if TYPE_CHECKING:
    from gouache.generation.families.base import LoadedModel
    from gouache.generation.loop.batch import BatchItem, LaneSpec

__all__ = ["FlowFamily", "calculate_shift", "qwen_chat_inputs"]


def calculate_shift(image_seq_len: int, config: dict[str, Any], max_shift: float = 1.15) -> float:
    """``mu`` for ``image_seq_len`` tokens from the scheduler config (diffusers' defaults)."""
    base_len = config.get("base_image_seq_len", 256)
    max_len = config.get("max_image_seq_len", 4096)
    base, top = config.get("base_shift", 0.5), config.get("max_shift", max_shift)
    m = (top - base) / (max_len - base_len)
    return image_seq_len * m + (base - m * base_len)


class FlowFamily(Family):
    """A rectified-flow transformer with an ``AutoencoderKL`` that has a shift factor."""

    sampler_kind = "flow"
    denoiser_part = "transformer"
    cuda_dtype = torch.bfloat16

    def encode(
        self, model: LoadedModel, items: Sequence[BatchItem], spec: LaneSpec, cfg: bool,
        width: int, height: int,
    ) -> Conditioning:  # fmt: skip
        """Prompts and, with real CFG, negative prompts embedded alike by ``_embed`` (SD3,
        Z-Image, Flux.2 Klein; Flux.1's distilled guidance has no negative row: its own)."""
        positive = self._embed(model, [item.prompt for item in items])
        negative = self._embed(model, [item.negative_prompt for item in items]) if cfg else None
        return Conditioning(positive, negative)

    def _embed(self, model: LoadedModel, texts: list[str]) -> dict[str, torch.Tensor]:
        """The named conditioning tensors of ``texts`` (one row each), on the denoiser's rows."""
        raise NotImplementedError(f"{type(self).__name__} embeds its prompts in its own encode")

    def initial_latents(self, model: LoadedModel, noise: torch.Tensor, scheduler: Any) -> torch.Tensor:
        return noise

    def unscale(self, model: LoadedModel, latents: torch.Tensor) -> torch.Tensor:
        config = model.vae.config
        return latents / config.scaling_factor + (getattr(config, "shift_factor", None) or 0.0)

    def scale(self, model: LoadedModel, latents: torch.Tensor) -> torch.Tensor:
        config = model.vae.config
        return (latents - (getattr(config, "shift_factor", None) or 0.0)) * config.scaling_factor

    def decode(self, model: LoadedModel, latents: torch.Tensor, tiled: bool = False) -> torch.Tensor:
        vae = model.vae
        latents = self.unscale(model, latents.to(vae.dtype))
        if tiled:
            vae.enable_tiling()
        try:
            return vae.decode(latents, return_dict=False)[0]
        finally:
            if tiled:
                vae.disable_tiling()

    def encode_image(self, model: LoadedModel, pixels: torch.Tensor) -> torch.Tensor:
        vae = model.vae
        mean = vae.encode(pixels.to(model.device, vae.dtype)).latent_dist.mean
        return self.scale(model, mean)


def qwen_chat_inputs(model: LoadedModel, texts: list[str], *, thinking: bool, max_length: int) -> Any:
    """``texts`` as user turns of the Qwen3 chat template, tokenized and padded to
    ``max_length`` (the Qwen-encoded families, Z-Image and Flux.2 Klein, as their pipelines'
    ``_get_qwen3_prompt_embeds``; they differ in ``enable_thinking``)."""
    (tokenizer,) = model.tokenizers
    chats = [tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                           add_generation_prompt=True, enable_thinking=thinking)
             for text in texts]  # fmt: skip
    return tokenizer(chats, padding="max_length", max_length=max_length, truncation=True,
                     return_tensors="pt")  # fmt: skip

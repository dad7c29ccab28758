"""Flux.1 (dev and schnell): CLIP pooled + T5 sequence embeddings, a packed 2x2-patch transformer.

Adapted from diffusers 0.42.1 ``FluxPipeline``: ``encode_prompt`` (the CLIP pooler output, the
T5 last hidden state padded to ``max_sequence_length`` = 512, the pipeline's default, so every
prompt has one length and any lanes share a call), ``prepare_latents`` (the noise is drawn
unpacked, as the pipeline draws it, then packed into 2x2 patches), the sigmas
``linspace(1, 1/n, n)`` with ``mu`` from the packed token count, and the transformer call with
``timestep / 1000``. Lanes keep their latents unpacked (the scheduler step is elementwise, so
packing commutes with it) and ``predict`` packs the rows and the position ids per call.

Flux dev is guidance-distilled: ``--cfg`` is the guidance *embedding*, one value per row, and no
unconditional row is ever run (the pipeline's ``true_cfg_scale`` is not offered). Schnell has no
guidance embedding: ``--cfg`` does nothing there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from gouache.generation.families.base import Rows
from gouache.generation.families.flow import FlowFamily, calculate_shift
from gouache.generation.loop.conditioning import Conditioning

if TYPE_CHECKING:
    from gouache.generation.families.base import LoadedModel
    from gouache.generation.loop.batch import BatchItem, LaneSpec

__all__ = ["Flux", "pack", "position_ids", "unpack"]

MAX_SEQUENCE_LENGTH = 512  # FluxPipeline.__call__'s default


class Flux(FlowFamily):
    name = "flux"
    pipeline_classes = ("FluxPipeline",)
    text_parts = ("tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2")

    def uses_cfg(self, model: LoadedModel, spec: LaneSpec) -> bool:
        return False  # distilled guidance (dev) or none (schnell): never an unconditional row

    def encode(
        self, model: LoadedModel, items: Sequence[BatchItem], spec: LaneSpec, cfg: bool,
        width: int, height: int,
    ) -> Conditioning:  # fmt: skip
        prompts = [item.prompt for item in items]
        (clip_tok, t5_tok), (clip, t5) = model.tokenizers, model.text_encoders
        ids = clip_tok(prompts, padding="max_length", max_length=clip_tok.model_max_length,
                       truncation=True, return_tensors="pt").input_ids  # fmt: skip
        pooled = clip(ids.to(model.text_device), output_hidden_states=False).pooler_output.to(clip.dtype)
        ids = t5_tok(prompts, padding="max_length", max_length=MAX_SEQUENCE_LENGTH,
                     truncation=True, return_tensors="pt").input_ids  # fmt: skip
        hidden = t5(ids.to(model.text_device), output_hidden_states=False)[0].to(t5.dtype)
        shared = {}
        if model.denoiser.config.guidance_embeds:
            shared["guidance"] = torch.full([len(items)], float(spec.guidance), device=model.text_device)
        positive = {"encoder_hidden_states": hidden, "pooled_projections": pooled}
        return Conditioning(positive, None, shared)

    def latent_shape(self, model: LoadedModel, width: int, height: int) -> tuple[int, ...]:
        factor = model.vae_scale_factor * 2
        channels = model.denoiser.config.in_channels // 4
        return (1, channels, 2 * (height // factor), 2 * (width // factor))

    def schedule(self, model: LoadedModel, steps: int, width: int, height: int) -> dict[str, Any]:
        _, _, h, w = self.latent_shape(model, width, height)
        config = model.scheduler_config
        sigmas = None if config.get("use_flow_sigmas") else np.linspace(1.0, 1 / steps, steps)
        return {"sigmas": sigmas, "mu": calculate_shift((h // 2) * (w // 2), config)}

    def predict(self, model: LoadedModel, rows: Rows) -> torch.Tensor:
        sample = rows.sample
        _, channels, h, w = sample.shape
        hidden = rows.inputs["encoder_hidden_states"]
        out = model.denoiser_call(
            hidden_states=pack(sample),
            timestep=rows.timesteps.to(sample.dtype) / 1000,
            guidance=rows.inputs.get("guidance"),
            pooled_projections=rows.inputs["pooled_projections"],
            encoder_hidden_states=hidden,
            txt_ids=torch.zeros(hidden.shape[1], 3, device=sample.device, dtype=model.text_encoders[0].dtype),
            img_ids=position_ids(h // 2, w // 2).to(device=sample.device, dtype=hidden.dtype),
            return_dict=False,
        )[0]
        return unpack(out, channels, h, w)


def pack(latents: torch.Tensor) -> torch.Tensor:
    """``FluxPipeline._pack_latents``: (B, C, H, W) -> (B, H/2 * W/2, 4C) of 2x2 patches."""
    b, c, h, w = latents.shape
    latents = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return latents.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(latents: torch.Tensor, channels: int, h: int, w: int) -> torch.Tensor:
    """``FluxPipeline._unpack_latents``: the inverse of ``pack``."""
    b = latents.shape[0]
    latents = latents.view(b, h // 2, w // 2, channels, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return latents.reshape(b, channels, h, w)


def position_ids(h: int, w: int) -> torch.Tensor:
    """``FluxPipeline._prepare_latent_image_ids``: (row, column) of each packed token."""
    ids = torch.zeros(h, w, 3)
    ids[..., 1] = ids[..., 1] + torch.arange(h)[:, None]
    ids[..., 2] = ids[..., 2] + torch.arange(w)[None, :]
    return ids.reshape(h * w, 3)

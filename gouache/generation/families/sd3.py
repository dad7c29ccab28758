"""Stable Diffusion 3 / 3.5: two CLIPs + T5, an MMDiT transformer, real classifier-free guidance.

Adapted from diffusers 0.42.1 ``StableDiffusion3Pipeline``: ``encode_prompt`` (each CLIP's
penultimate hidden states concatenated and zero-padded to T5's width, then T5's sequence of
``max_sequence_length`` = 256 appended; the pooled outputs of both CLIPs concatenated; an empty
negative prompt is encoded as ""), ``prepare_latents`` (unpacked latents), the scheduler's own
sigmas with ``mu`` only when its config asks for dynamic shifting, and the transformer called with
the timestep as it is. CFG runs the unconditional rows beside the others (skip-layer guidance is
not offered). Every prompt pads to one length, so any lanes share a call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from gouache.generation.families.base import Rows
from gouache.generation.families.flow import FlowFamily, calculate_shift

if TYPE_CHECKING:
    from gouache.generation.families.base import LoadedModel

__all__ = ["SD3"]

MAX_SEQUENCE_LENGTH = 256  # StableDiffusion3Pipeline.__call__'s default


class SD3(FlowFamily):
    name = "sd3"
    pipeline_classes = ("StableDiffusion3Pipeline",)
    text_parts = ("tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2",
                  "tokenizer_3", "text_encoder_3")  # fmt: skip

    def _embed(self, model: LoadedModel, texts: list[str]) -> dict[str, torch.Tensor]:
        clips, pooled = [], []
        for tokenizer, encoder in zip(model.tokenizers[:2], model.text_encoders[:2], strict=True):
            ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length,
                            truncation=True, return_tensors="pt").input_ids  # fmt: skip
            out = encoder(ids.to(model.text_device), output_hidden_states=True)
            pooled.append(out[0])
            clips.append(out.hidden_states[-2].to(encoder.dtype))
        clip = torch.cat(clips, dim=-1)
        t5 = self._t5(model, texts, clip.dtype)
        clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        return {"encoder_hidden_states": torch.cat([clip, t5], dim=-2),
                "pooled_projections": torch.cat(pooled, dim=-1)}  # fmt: skip

    @staticmethod
    def _t5(model: LoadedModel, texts: list[str], dtype: torch.dtype) -> torch.Tensor:
        if len(model.text_encoders) < 3:  # SD3 saved without T5: zeros, as the pipeline
            width = model.denoiser.config.joint_attention_dim
            return torch.zeros(len(texts), MAX_SEQUENCE_LENGTH, width, device=model.text_device, dtype=dtype)
        tokenizer, encoder = model.tokenizers[2], model.text_encoders[2]
        ids = tokenizer(texts, padding="max_length", max_length=MAX_SEQUENCE_LENGTH, truncation=True,
                        add_special_tokens=True, return_tensors="pt").input_ids  # fmt: skip
        return encoder(ids.to(model.text_device))[0].to(encoder.dtype)

    def latent_shape(self, model: LoadedModel, width: int, height: int) -> tuple[int, ...]:
        factor = model.vae_scale_factor
        return (1, model.denoiser.config.in_channels, height // factor, width // factor)

    def schedule(self, model: LoadedModel, steps: int, width: int, height: int) -> dict[str, Any]:
        config = model.scheduler_config
        if not config.get("use_dynamic_shifting"):
            return {}
        _, _, h, w = self.latent_shape(model, width, height)
        patch = model.denoiser.config.patch_size
        return {"mu": calculate_shift((h // patch) * (w // patch), config, max_shift=1.16)}

    def predict(self, model: LoadedModel, rows: Rows) -> torch.Tensor:
        return model.denoiser_call(
            hidden_states=rows.sample,
            timestep=rows.timesteps,
            encoder_hidden_states=rows.inputs["encoder_hidden_states"],
            pooled_projections=rows.inputs["pooled_projections"],
            return_dict=False,
        )[0]

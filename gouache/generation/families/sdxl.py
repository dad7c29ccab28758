"""Stable Diffusion XL: two CLIP text encoders, pooled text embeddings and size ids, a UNet.

``encode`` is adapted from diffusers 0.42.1 ``StableDiffusionXLPipeline.encode_prompt`` and
``_get_add_time_ids``: penultimate hidden states of both encoders, the pooled output of the
second; an empty negative prompt is zeros when the model says ``force_zeros_for_empty_prompt``.
The decode follows the pipeline too: ``latents_mean``/``latents_std`` when the VAE has them, and
an fp16 VAE whose config says ``force_upcast`` decodes in fp32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from gouache.generation.families.unet import UNetFamily, prepare_control
from gouache.generation.loop.conditioning import Conditioning

if TYPE_CHECKING:
    from gouache.generation.families.base import LoadedModel
    from gouache.generation.loop.batch import BatchItem, LaneSpec

__all__ = ["SDXL"]


class SDXL(UNetFamily):
    name = "sdxl"
    pipeline_classes = (
        "StableDiffusionXLPipeline",
        "StableDiffusionXLImg2ImgPipeline",
        "StableDiffusionXLControlNetPipeline",
    )
    text_parts = ("tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2")
    single_file = True
    upcast_vae = True

    def encode(
        self, model: LoadedModel, items: Sequence[BatchItem], spec: LaneSpec, cfg: bool,
        width: int, height: int,
    ) -> Conditioning:  # fmt: skip
        hidden, pooled = self._embed(model, [item.prompt for item in items])
        negative = None
        if cfg:
            neg_hidden, neg_pooled = self._embed(model, [item.negative_prompt for item in items])
            if model.force_zeros_for_empty_prompt:
                empty = torch.tensor([not item.negative_prompt for item in items], device=model.text_device)
                neg_hidden = torch.where(empty[:, None, None], torch.zeros_like(neg_hidden), neg_hidden)
                neg_pooled = torch.where(empty[:, None], torch.zeros_like(neg_pooled), neg_pooled)
            negative = {"encoder_hidden_states": neg_hidden, "text_embeds": neg_pooled}
        time_ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=hidden.dtype)
        shared = {"time_ids": time_ids.repeat(len(items), 1).to(model.text_device),
                  **self.guidance_inputs(model, spec)}  # fmt: skip
        cond = Conditioning({"encoder_hidden_states": hidden, "text_embeds": pooled}, negative, shared)
        if spec.pipeline == "depth":
            cond.control = prepare_control(model, [i.control_image for i in items], height, width)
        return cond

    def unet_kwargs(self, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        kwargs = super().unet_kwargs(inputs)
        kwargs["added_cond_kwargs"] = {"text_embeds": inputs["text_embeds"], "time_ids": inputs["time_ids"]}
        return kwargs

    @staticmethod
    def _embed(model: LoadedModel, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, pooled = [], None
        for tokenizer, text_encoder in zip(model.tokenizers, model.text_encoders, strict=True):
            ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length,
                            truncation=True, return_tensors="pt").input_ids  # fmt: skip
            out = text_encoder(ids.to(model.text_device), output_hidden_states=True)
            if pooled is None and out[0].ndim == 2:
                pooled = out[0]
            hidden.append(out.hidden_states[-2])
        assert pooled is not None, "an SDXL text encoder with a projection gives pooled output"
        dtype = model.text_encoders[-1].dtype
        return torch.cat(hidden, dim=-1).to(dtype), pooled.to(dtype)

    def unscale(self, model: LoadedModel, latents: torch.Tensor) -> torch.Tensor:
        config = model.vae.config
        mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
        if mean is None or std is None:
            return latents / config.scaling_factor
        view = (1, len(mean), 1, 1)
        mean_t = torch.tensor(mean).view(view).to(latents.device, latents.dtype)
        std_t = torch.tensor(std).view(view).to(latents.device, latents.dtype)
        return latents * std_t / config.scaling_factor + mean_t

    def scale(self, model: LoadedModel, latents: torch.Tensor) -> torch.Tensor:
        config = model.vae.config
        mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
        if mean is None or std is None:
            return latents * config.scaling_factor
        view = (1, len(mean), 1, 1)
        mean_t = torch.tensor(mean).view(view).to(latents.device, latents.dtype)
        std_t = torch.tensor(std).view(view).to(latents.device, latents.dtype)
        return (latents - mean_t) * config.scaling_factor / std_t

"""Latents to pictures: the VAE decode, the cheap preview decode of frames, PIL conversion.

Shared by ``engine.py`` (request-level batches) and ``running.py`` (step-level lanes).
"""

from __future__ import annotations

from typing import Any

import torch

from gouache.generation.models import LoadedModel

__all__ = ["decode_frames", "decode_latents", "to_pil"]


def decode_latents(model: LoadedModel, latents: torch.Tensor, tiled: bool) -> torch.Tensor:
    """Latents to [-1, 1] images with the model's VAE (tiled after an out-of-memory error)."""
    # Adapted from the decode step of StableDiffusionPipeline / StableDiffusionXLPipeline.__call__.
    vae = model.vae
    config = vae.config
    upcast = model.family == "sdxl" and vae.dtype == torch.float16 and config.force_upcast
    if upcast:
        vae.to(dtype=torch.float32)
        latents = latents.to(torch.float32)
    mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
    if model.family == "sdxl" and mean is not None and std is not None:
        view = (1, len(mean), 1, 1)
        mean = torch.tensor(mean).view(view).to(latents.device, latents.dtype)
        std = torch.tensor(std).view(view).to(latents.device, latents.dtype)
        latents = latents * std / config.scaling_factor + mean
    else:
        latents = latents / config.scaling_factor
    if tiled:
        vae.enable_tiling()
    try:
        return vae.decode(latents, return_dict=False)[0]
    finally:
        if tiled:
            vae.disable_tiling()
        if upcast:
            vae.to(dtype=torch.float16)


def decode_frames(model: LoadedModel, latents: torch.Tensor) -> torch.Tensor:
    """Denoising frames: the preview decoder (AutoencoderTiny) when configured, else the VAE."""
    decoder = model.preview_decoder
    if decoder is not None:
        return decoder.decode(latents / decoder.config.scaling_factor, return_dict=False)[0]
    return decode_latents(model, latents, tiled=False)


def to_pil(image: torch.Tensor, model: LoadedModel) -> list[Any]:
    """Decoded [-1, 1] tensors to PIL images, as diffusers' VaeImageProcessor does."""
    from diffusers.image_processor import VaeImageProcessor

    return VaeImageProcessor(vae_scale_factor=model.vae_scale_factor).postprocess(
        image, output_type="pil"
    )

"""The denoising objective the UNet and ControlNet phases share: prompt embeddings as the
pipeline computes them, and the epsilon-prediction loss.

Its own module so that ``train.py`` (which runs the ControlNet phase) and
``controlnet_training.py`` (which uses the objective) do not import each other.
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler

__all__ = ["encode", "diffusion_loss"]


def encode(tokenizer, text_encoder, captions: list[str]) -> torch.Tensor:  # noqa: ANN001
    """Token embeddings exactly as ``StableDiffusionPipeline.encode_prompt`` computes them."""
    ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    return text_encoder(ids)[0]


def diffusion_loss(noise_scheduler: DDPMScheduler, predict, x0: torch.Tensor,  # noqa: ANN001
                   generator: torch.Generator, snr_gamma: float = 5.0) -> torch.Tensor:
    """Epsilon-prediction MSE with min-SNR-gamma weighting (Hang et al., 2023)."""
    b = x0.shape[0]
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (b,), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    noisy = noise_scheduler.add_noise(x0, noise, t)
    alpha_bar = noise_scheduler.alphas_cumprod[t]
    snr = alpha_bar / (1 - alpha_bar)
    weight = torch.clamp(snr, max=snr_gamma) / snr
    per_item = (predict(noisy, t) - noise).pow(2).mean(dim=(1, 2, 3))
    return (per_item * weight).mean()

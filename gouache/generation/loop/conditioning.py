"""What the UNet (and ControlNet) are conditioned on: prompt embeddings and control images.

Adapted from diffusers' ``encode_prompt`` of the SD and SDXL pipelines and the ControlNet
pipeline's ``prepare_image``, for batches whose items each have their own prompt and negative
prompt. ``Conditioning`` keeps every tensor row-aligned with the engine's lanes, so dropping a
cancelled item is one ``take``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from diffusers.image_processor import VaeImageProcessor

from gouache.generation.loop.batch import BatchItem
from gouache.generation.models import LoadedModel

__all__ = [
    "Conditioning",
    "encode_sd",
    "encode_sdxl",
    "prepare_control",
    "guidance_embedding",
    "annealed",
    "guidance_scales",
    "CADS_TAU1",
    "CADS_TAU2",
]


@dataclass
class Conditioning:
    """Per-row inputs of the UNet (and ControlNet), row-aligned with the lanes."""

    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor | None = None
    pooled: torch.Tensor | None = None  # SDXL
    negative_pooled: torch.Tensor | None = None  # SDXL
    time_ids: torch.Tensor | None = None  # SDXL
    control_image: torch.Tensor | None = None  # depth
    timestep_cond: torch.Tensor | None = None  # LCM-distilled UNets

    def take(self, rows: torch.Tensor) -> Conditioning:
        """Only ``rows`` (a batch-mate left): every tensor keeps the same row order."""
        picked = {
            f.name: value.index_select(0, rows.to(value.device))
            for f in fields(self)
            if (value := getattr(self, f.name)) is not None
        }
        return replace(self, **picked)

    def model_inputs(
        self, do_cfg: bool
    ) -> tuple[torch.Tensor, dict[str, Any] | None, torch.Tensor | None]:
        """Embeddings, SDXL added conditions and control image for the CFG-doubled batch."""

        def doubled(negative: torch.Tensor | None, positive: torch.Tensor | None) -> Any:
            if positive is None or not do_cfg:
                return positive
            return torch.cat([negative if negative is not None else positive, positive])

        embeds = doubled(self.negative_prompt_embeds, self.prompt_embeds)
        added = None
        if self.pooled is not None:
            added = {
                "text_embeds": doubled(self.negative_pooled, self.pooled),
                "time_ids": doubled(self.time_ids, self.time_ids),
            }
        return embeds, added, doubled(self.control_image, self.control_image)


def _tokenize(tokenizer: Any, texts: list[str], max_length: int) -> torch.Tensor:
    return tokenizer(
        texts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
    ).input_ids


def encode_sd(model: LoadedModel, items: Sequence[BatchItem], do_cfg: bool) -> Conditioning:
    # Adapted from diffusers StableDiffusionPipeline.encode_prompt (no LoRA, no clip_skip).
    (tokenizer,), (text_encoder,) = model.tokenizers, model.text_encoders
    use_mask = getattr(text_encoder.config, "use_attention_mask", False)

    def encode(texts: list[str]) -> torch.Tensor:
        inputs = tokenizer(
            texts,
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        mask = inputs.attention_mask.to(model.device) if use_mask else None
        embeds = text_encoder(inputs.input_ids.to(model.device), attention_mask=mask)[0]
        return embeds.to(dtype=text_encoder.dtype, device=model.device)

    positive = encode([item.prompt for item in items])
    negative = encode([item.negative_prompt for item in items]) if do_cfg else None
    return Conditioning(prompt_embeds=positive, negative_prompt_embeds=negative)


def encode_sdxl(
    model: LoadedModel, items: Sequence[BatchItem], do_cfg: bool, height: int, width: int
) -> Conditioning:
    # Adapted from diffusers StableDiffusionXLPipeline.encode_prompt and _get_add_time_ids:
    # penultimate hidden states of both encoders, pooled output of the second. An empty
    # negative prompt is zeros when the model says force_zeros_for_empty_prompt.
    def encode(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, pooled = [], None
        for tokenizer, text_encoder in zip(model.tokenizers, model.text_encoders, strict=True):
            ids = _tokenize(tokenizer, texts, tokenizer.model_max_length)
            out = text_encoder(ids.to(model.device), output_hidden_states=True)
            if pooled is None and out[0].ndim == 2:
                pooled = out[0]
            hidden.append(out.hidden_states[-2])
        dtype = model.text_encoders[-1].dtype
        return torch.cat(hidden, dim=-1).to(dtype), pooled.to(dtype)

    positive, pooled = encode([item.prompt for item in items])
    negative = negative_pooled = None
    if do_cfg:
        negative, negative_pooled = encode([item.negative_prompt for item in items])
        if model.force_zeros_for_empty_prompt:
            empty = torch.tensor([not item.negative_prompt for item in items], device=model.device)
            negative = torch.where(empty[:, None, None], torch.zeros_like(negative), negative)
            negative_pooled = torch.where(
                empty[:, None], torch.zeros_like(negative_pooled), negative_pooled
            )
    time_ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=positive.dtype)
    return Conditioning(
        prompt_embeds=positive,
        negative_prompt_embeds=negative,
        pooled=pooled,
        negative_pooled=negative_pooled,
        time_ids=time_ids.repeat(len(items), 1).to(model.device),
    )


def prepare_control(
    model: LoadedModel, items: Sequence[BatchItem], height: int, width: int
) -> torch.Tensor:
    # Adapted from diffusers StableDiffusionControlNetPipeline.prepare_image: resize, [0, 1].
    processor = VaeImageProcessor(
        vae_scale_factor=model.vae_scale_factor, do_convert_rgb=True, do_normalize=False
    )
    images = [
        processor.preprocess(item.control_image, height=height, width=width) for item in items
    ]
    image = torch.cat(images).to(dtype=torch.float32)
    return image.to(device=model.device, dtype=model.controlnet.dtype)


def guidance_embedding(w: torch.Tensor, embedding_dim: int) -> torch.Tensor:
    # Adapted from diffusers StableDiffusionPipeline.get_guidance_scale_embedding.
    w = w * 1000.0
    half_dim = embedding_dim // 2
    emb = torch.log(torch.tensor(10000.0)) / (half_dim - 1)
    emb = torch.exp(torch.arange(half_dim, dtype=torch.float32) * -emb)
    emb = w.to(torch.float32)[:, None] * emb[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
    if embedding_dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


CADS_TAU1 = 0.7  # clean condition from here down to t = 0
CADS_TAU2 = 1.0  # pure noise only at t = 1


def annealed(
    cond: Conditioning,
    noise_level: float,
    generators: Sequence[torch.Generator],
    *,
    tau1: float = CADS_TAU1,
    tau2: float = CADS_TAU2,
    scale: float = 0.25,
    psi: float = 1.0,
) -> Conditioning:
    """Condition-annealed sampling (CADS, Sadat et al., ICLR 2024) for one denoising step.

    ``noise_level`` runs from 1 (pure noise) to 0. Early on the prompt embedding is mostly
    replaced by Gaussian noise, so samples spread out; by ``tau1`` the clean condition is back,
    so they still land on the prompt: gamma = 1 for t <= tau1, (tau2 - t) / (tau2 - tau1)
    between, 0 for t >= tau2; y' = sqrt(gamma) y + scale sqrt(1 - gamma) n, rescaled to y's
    per-sample mean and std and mixed with psi. Built from the clean ``cond`` at every step (a
    callback that noised the previous step's output would compound the noise), with one
    generator per row so a seed reproduces its image. Only the positive condition is noised.

    The schedule keeps the final steps clean: every step with ``t <= tau1`` (here 0.7, the last
    70% of a DDIM run) sees the clean condition, and the ramp reaches pure noise only at
    ``t = 1``. The paper's defaults (0.6, 0.9) fully replace the prompt for the first steps and
    hand back a clean condition only once two thirds of the noise variance is gone on a cosine
    schedule; on the demo model that left visible pixel noise (Laplacian energy +18% over the
    baseline on the same seeds; with these defaults about +2%,
    ``tests/unit/generation/test_cads.py::test_cads_leaves_the_final_images_clean``).
    """
    gamma = min(1.0, max(0.0, (tau2 - noise_level) / (tau2 - tau1)))
    if gamma >= 1.0:
        return cond

    def noised(y: torch.Tensor | None) -> torch.Tensor | None:
        if y is None:
            return None
        noise = torch.cat(
            [torch.randn(y.shape[1:], generator=g).unsqueeze(0) for g in generators]
        ).to(device=y.device, dtype=y.dtype)
        mixed = gamma**0.5 * y + scale * (1 - gamma) ** 0.5 * noise
        dims = tuple(range(1, y.ndim))
        mean, std = y.mean(dims, keepdim=True), y.std(dims, keepdim=True)
        rescaled = (mixed - mixed.mean(dims, keepdim=True)) / mixed.std(dims, keepdim=True).clamp_min(
            1e-6
        ) * std + mean
        return psi * rescaled + (1 - psi) * mixed

    return replace(cond, prompt_embeds=noised(cond.prompt_embeds), pooled=noised(cond.pooled))


def guidance_scales(items: Sequence[BatchItem], guidance: float, noise_level: float) -> torch.Tensor:
    """Per-row CFG scale ``[rows, 1, 1, 1]`` at ``noise_level`` (1 = noise, 0 = clean): the
    batch's ``guidance``, or 1 (conditional prediction only) for rows whose item's
    ``guidance_interval`` excludes this step (limited-interval guidance)."""
    scales = [
        guidance
        if item.guidance_interval is None
        or item.guidance_interval[0] < noise_level <= item.guidance_interval[1]
        else 1.0
        for item in items
    ]
    return torch.tensor(scales, dtype=torch.float32).view(-1, 1, 1, 1)

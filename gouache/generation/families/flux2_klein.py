"""Flux.2 Klein (distilled and base): a Qwen3 text encoder, a Flux.2 transformer, the Flux.2 VAE.

Adapted from diffusers 0.42.1 ``Flux2KleinPipeline``: ``_get_qwen3_prompt_embeds`` (the prompt in
the tokenizer's chat template, thinking off, padded to ``max_sequence_length`` = 512, the hidden
states of layers 9, 18 and 27 side by side on the channel axis: every prompt has one length, so
any lanes share a call), ``prepare_latents`` (the noise is drawn in the patchified shape,
``(4 * latent channels, H/2, W/2)`` of the VAE's latents, then packed into a token sequence by
a plain reshape), the sigmas ``linspace(1, 1/n, n)`` with ``compute_empirical_mu`` (from the
token count *and* the step count, so each lane's step count has its own shift), the transformer
called with ``timestep / 1000``, no guidance embedding, 4-axis position ids ``(t, h, w, l)``,
and the decode: the VAE's batch-norm statistics undone (``latents * sqrt(var + eps) + mean``),
the 2x2 patches unfolded, then ``vae.decode`` (no scaling or shift factor).

Its guidance is real classifier-free guidance, ``uncond + g * (cond - uncond)``, on for ``g > 1``
and never for the step-distilled checkpoints (``model_index.json``'s ``is_distilled``, as the
pipeline's ``do_classifier_free_guidance``). The pipeline's negative prompt is always ""; here
an empty ``--no`` is that "", and a given one is encoded like a prompt (the pipeline's
``negative_prompt_embeds``). Reference images (the pipeline's ``image=``) are not offered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from gouache.generation.families.base import Rows
from gouache.generation.families.flow import FlowFamily, qwen_chat_inputs

if TYPE_CHECKING:
    from gouache.generation.families.base import LoadedModel
    from gouache.generation.loop.batch import LaneSpec

__all__ = ["Flux2Klein", "compute_empirical_mu", "patchify", "unpatchify"]

MAX_SEQUENCE_LENGTH = 512  # Flux2KleinPipeline.__call__'s default
TEXT_ENCODER_OUT_LAYERS = (9, 18, 27)  # its text_encoder_out_layers default


class Flux2Klein(FlowFamily):
    name = "flux2-klein"
    pipeline_classes = ("Flux2KleinPipeline",)

    def uses_cfg(self, model: LoadedModel, spec: LaneSpec) -> bool:
        return spec.guidance > 1 and not model.pipeline_config.get("is_distilled", False)

    @staticmethod
    def _embed(model: LoadedModel, texts: list[str]) -> dict[str, torch.Tensor]:
        (encoder,) = model.text_encoders
        inputs = qwen_chat_inputs(model, texts, thinking=False, max_length=MAX_SEQUENCE_LENGTH)
        hidden = encoder(input_ids=inputs.input_ids.to(model.text_device),
                         attention_mask=inputs.attention_mask.to(model.text_device),
                         output_hidden_states=True, use_cache=False).hidden_states  # fmt: skip
        layers = torch.stack([hidden[k] for k in TEXT_ENCODER_OUT_LAYERS], dim=2).to(encoder.dtype)
        b, length, n, width = layers.shape  # each token's layers side by side, as the pipeline
        return {"encoder_hidden_states": layers.reshape(b, length, n * width)}

    def latent_shape(self, model: LoadedModel, width: int, height: int) -> tuple[int, ...]:
        factor = model.vae_scale_factor * 2
        return (1, model.denoiser.config.in_channels, height // factor, width // factor)

    def schedule(self, model: LoadedModel, steps: int, width: int, height: int) -> dict[str, Any]:
        _, _, h, w = self.latent_shape(model, width, height)
        sigmas = None if model.scheduler_config.get("use_flow_sigmas") else np.linspace(1.0, 1 / steps, steps)
        return {"sigmas": sigmas, "mu": compute_empirical_mu(h * w, steps)}

    def predict(self, model: LoadedModel, rows: Rows) -> torch.Tensor:
        dtype = model.denoiser.dtype
        sample = rows.sample
        b, channels, h, w = sample.shape
        hidden = rows.inputs["encoder_hidden_states"]
        out = model.denoiser_call(
            hidden_states=sample.to(dtype).reshape(b, channels, h * w).permute(0, 2, 1),
            timestep=rows.timesteps.to(sample.dtype) / 1000,
            guidance=None,
            encoder_hidden_states=hidden,
            txt_ids=_ids(1, 1, hidden.shape[1], sample.device, text=True),
            img_ids=_ids(h, w, 1, sample.device, text=False),
            return_dict=False,
        )[0]
        return out.permute(0, 2, 1).reshape(b, -1, h, w)

    # The VAE's own latents are unpatchified and not normalised; the transformer's are both.

    def unscale(self, model: LoadedModel, latents: torch.Tensor) -> torch.Tensor:
        mean, std = _batch_norm(model, latents)
        return unpatchify(latents * std + mean)

    def scale(self, model: LoadedModel, latents: torch.Tensor) -> torch.Tensor:
        patches = patchify(latents)
        mean, std = _batch_norm(model, patches)
        return (patches - mean) / std


def _batch_norm(model: LoadedModel, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE's latent statistics (``vae.bn``), shaped and typed to broadcast over ``like``."""
    bn, eps = model.vae.bn, model.vae.config.batch_norm_eps
    mean = bn.running_mean.view(1, -1, 1, 1).to(like.device, like.dtype)
    std = torch.sqrt(bn.running_var.view(1, -1, 1, 1) + eps).to(like.device, like.dtype)
    return mean, std


def _ids(h: int, w: int, length: int, device: torch.device, *, text: bool) -> torch.Tensor:
    """``Flux2KleinPipeline._prepare_text_ids``/``_prepare_latent_ids`` for one row (the
    transformer reads the first row's only): ``(t, h, w, l)`` of each token, t = 0."""
    one = torch.arange(1)
    if text:
        ids = torch.cartesian_prod(one, one, one, torch.arange(length))
    else:
        ids = torch.cartesian_prod(one, torch.arange(h), torch.arange(w), one)
    return ids.to(device)


def compute_empirical_mu(image_seq_len: int, num_steps: int) -> float:
    """diffusers 0.42.1 ``pipeline_flux2.compute_empirical_mu``: the shift for ``image_seq_len``
    tokens at ``num_steps`` steps, fitted by Black Forest Labs between 10 and 200 steps."""
    a1, b1 = 8.73809524e-05, 1.89833333
    a2, b2 = 0.00016927, 0.45666666
    if image_seq_len > 4300:
        return float(a2 * image_seq_len + b2)
    m_200 = a2 * image_seq_len + b2
    m_10 = a1 * image_seq_len + b1
    a = (m_200 - m_10) / 190.0
    return float(a * num_steps + (m_200 - 200.0 * a))


def patchify(latents: torch.Tensor) -> torch.Tensor:
    """``Flux2KleinPipeline._patchify_latents``: (B, C, H, W) -> (B, 4C, H/2, W/2)."""
    b, c, h, w = latents.shape
    latents = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return latents.reshape(b, c * 4, h // 2, w // 2)


def unpatchify(latents: torch.Tensor) -> torch.Tensor:
    """``Flux2KleinPipeline._unpatchify_latents``: the inverse of ``patchify``."""
    b, c, h, w = latents.shape
    latents = latents.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return latents.reshape(b, c // 4, h * 2, w * 2)

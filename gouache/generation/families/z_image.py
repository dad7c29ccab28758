"""Z-Image and Z-Image Turbo: a Qwen3 text encoder, lists of caption features, a single-stream DiT.

Adapted from diffusers 0.42.1 ``ZImagePipeline``: ``_encode_prompt`` (the prompt in the
tokenizer's chat template, padded to ``max_sequence_length`` = 512, the encoder's penultimate
hidden states, kept only where the attention mask is set: each prompt its own length; an empty
negative prompt is encoded as ""), ``prepare_latents`` (unpacked, as drawn), sigmas
``linspace(1, 1/n, n)`` with ``mu`` from ``(h/2) * (w/2)``, the transformer called on lists with
``(1000 - t) / 1000`` and its output negated. Its CFG is ``cond + g * (cond - uncond)``, on for
``g > 0``: the loop's ``uncond + s * (cond - uncond)`` with ``s = g + 1`` (``cfg_scale``). The
pipeline's ``cfg_truncation``/``cfg_normalization`` are off by default and not offered
(``--diversify``'s guidance interval is the step-level equivalent of truncation).

Prompts of different lengths share a call: a row carries its features padded to 512 and its
length, and ``predict`` hands the transformer each row's own slice, as the pipeline's list.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from gouache.generation.families.base import Rows
from gouache.generation.families.flow import FlowFamily, calculate_shift, qwen_chat_inputs

if TYPE_CHECKING:
    from gouache.generation.families.base import LoadedModel
    from gouache.generation.loop.batch import LaneSpec

__all__ = ["ZImage"]

MAX_SEQUENCE_LENGTH = 512  # ZImagePipeline.__call__'s default


class ZImage(FlowFamily):
    name = "z-image"
    pipeline_classes = ("ZImagePipeline",)

    def uses_cfg(self, model: LoadedModel, spec: LaneSpec) -> bool:
        return spec.guidance > 0

    def cfg_scale(self, model: LoadedModel, spec: LaneSpec) -> float:
        return spec.guidance + 1

    @staticmethod
    def _embed(model: LoadedModel, texts: list[str]) -> dict[str, torch.Tensor]:
        (encoder,) = model.text_encoders
        inputs = qwen_chat_inputs(model, texts, thinking=True, max_length=MAX_SEQUENCE_LENGTH)
        mask = inputs.attention_mask.to(model.text_device).bool()
        hidden = encoder(input_ids=inputs.input_ids.to(model.text_device), attention_mask=mask,
                         output_hidden_states=True).hidden_states[-2]  # fmt: skip
        # Packed to the front (the mask's kept tokens in order) so a row's slice [:length] is
        # exactly the pipeline's ``prompt_embeds[i][prompt_masks[i]]``.
        order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
        packed = torch.gather(hidden, 1, order[..., None].expand_as(hidden))
        return {"cap_feats": packed, "cap_len": mask.sum(dim=1)}

    def latent_shape(self, model: LoadedModel, width: int, height: int) -> tuple[int, ...]:
        factor = model.vae_scale_factor * 2
        return (1, model.denoiser.in_channels, 2 * (height // factor), 2 * (width // factor))

    def schedule(self, model: LoadedModel, steps: int, width: int, height: int) -> dict[str, Any]:
        _, _, h, w = self.latent_shape(model, width, height)
        sigmas = torch.linspace(1.0, 1 / steps, steps).tolist()
        return {"sigmas": sigmas, "mu": calculate_shift((h // 2) * (w // 2), model.scheduler_config)}

    def predict(self, model: LoadedModel, rows: Rows) -> torch.Tensor:
        dtype = model.denoiser.dtype
        feats, lengths = rows.inputs["cap_feats"], rows.inputs["cap_len"].tolist()
        out = model.denoiser_call(
            list(rows.sample.to(dtype).unsqueeze(2).unbind(dim=0)),
            (1000 - rows.timesteps) / 1000,
            [feats[r, : int(n)] for r, n in enumerate(lengths)],
            return_dict=False,
        )[0]
        return -torch.stack([o.float() for o in out]).squeeze(2)

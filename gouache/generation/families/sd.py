"""Stable Diffusion 1.x / 2.x (and their LCM distillations): one CLIP text encoder, a UNet.

``encode`` is adapted from diffusers 0.42.1 ``StableDiffusionPipeline.encode_prompt`` (no
clip_skip) for a batch whose items each have their own prompt and negative prompt: an empty
negative prompt is encoded as the empty string, as the pipeline does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from gouache.generation.families.unet import UNetFamily, prepare_control
from gouache.generation.loop.conditioning import Conditioning

if TYPE_CHECKING:
    from gouache.generation.families.base import LoadedModel
    from gouache.generation.loop.batch import BatchItem, LaneSpec

__all__ = ["SD"]


class SD(UNetFamily):
    name = "sd"
    pipeline_classes = (
        "StableDiffusionPipeline",
        "StableDiffusionImg2ImgPipeline",
        "StableDiffusionControlNetPipeline",
        "LatentConsistencyModelPipeline",
    )
    single_file = True

    def encode(
        self, model: LoadedModel, items: Sequence[BatchItem], spec: LaneSpec, cfg: bool,
        width: int, height: int,
    ) -> Conditioning:  # fmt: skip
        positive = {"encoder_hidden_states": self._embed(model, [i.prompt for i in items])}
        negative = None
        if cfg:
            negative = {"encoder_hidden_states": self._embed(model, [i.negative_prompt for i in items])}
        cond = Conditioning(positive, negative, shared=self.guidance_inputs(model, spec))
        if spec.pipeline == "depth":
            cond.control = prepare_control(model, [i.control_image for i in items], height, width)
        return cond

    @staticmethod
    def _embed(model: LoadedModel, texts: list[str]) -> torch.Tensor:
        (tokenizer,), (text_encoder,) = model.tokenizers, model.text_encoders
        inputs = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length,
                           truncation=True, return_tensors="pt")  # fmt: skip
        use_mask = getattr(text_encoder.config, "use_attention_mask", False)
        mask = inputs.attention_mask.to(model.text_device) if use_mask else None
        embeds = text_encoder(inputs.input_ids.to(model.text_device), attention_mask=mask)[0]
        return embeds.to(dtype=text_encoder.dtype)

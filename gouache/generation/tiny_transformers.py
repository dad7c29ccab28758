"""Tiny flow-matching transformer models (Flux.1 dev/schnell, Flux.2 Klein, SD3, Z-Image) built in code.

Like ``tiny.py`` for the UNets: random weights at the sizes of diffusers' own pipeline tests'
``get_dummy_components()``, seeded, saved with the pipeline's ``save_pretrained`` and loaded
back through the registry's ``from_pretrained`` path, so the families and their parity tests
run offline on a CPU. Tokenizers are generated too: CLIP from ``tiny.make_tokenizer``'s byte
vocabulary, T5 from a small unigram model built with the ``tokenizers`` library (the real T5
tokenizer is a SentencePiece unigram), Qwen from a byte-level BPE with a chat template. The
images are noise.

Layout written by ``build_tiny_transformer(root, variant)``: ``root/pipeline/`` (model_index.json,
transformer/, vae/, text encoders, tokenizers, scheduler/).
"""

from __future__ import annotations

import string
import tempfile
from pathlib import Path
from typing import Any, Literal

import torch

from gouache.generation.tiny import _text_config, build_once, make_tokenizer

__all__ = ["VARIANTS", "Variant", "build_tiny_transformer", "ensure_tiny_transformer", "make_qwen_tokenizer",
           "make_t5_tokenizer"]

Variant = Literal["flux-dev", "flux-schnell", "flux2-klein", "flux2-klein-distilled", "sd3", "z-image"]
VARIANTS: tuple[Variant, ...] = ("flux-dev", "flux-schnell", "flux2-klein", "flux2-klein-distilled", "sd3", "z-image")
_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_SEED = 0


def make_t5_tokenizer(directory: Path) -> None:
    """A T5 tokenizer (unigram pieces, ``</s>`` appended, ``<pad>`` = 0) into ``directory``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -5.0) for c in string.ascii_letters + string.digits + string.punctuation]
    pieces += [("▁" + c, -4.0) for c in string.ascii_lowercase]
    pieces += [(a + b, -3.0) for a in "etaoinshrdlu" for b in "etaoinshrdlu"]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    T5TokenizerFast(
        tokenizer_object=tokenizer, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=0
    ).save_pretrained(directory)


def make_qwen_tokenizer(directory: Path) -> None:
    """A Qwen-style byte-level BPE tokenizer with a chat template into ``directory``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import Qwen2TokenizerFast

    from gouache.generation.tiny import _bytes_to_unicode

    chars = list(_bytes_to_unicode().values())
    letters = "etaoinshrdlu"
    merges = [(a, b) for a in letters for b in letters]
    tokens = chars + [a + b for a, b in merges]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {token: i for i, token in enumerate(tokens + specials)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    Qwen2TokenizerFast(
        tokenizer_object=tokenizer, unk_token=None, bos_token=None, eos_token="<|im_end|>",
        pad_token="<|endoftext|>", additional_special_tokens=specials[1:], chat_template=_CHAT_TEMPLATE,
    ).save_pretrained(directory)  # fmt: skip


def _z_image(parts: dict[str, Any]):  # -> ZImagePipeline
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        ZImagePipeline,
        ZImageTransformer2DModel,
    )
    from transformers import Qwen3Config, Qwen3Model

    torch.manual_seed(_SEED)
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32, n_layers=2,
        n_refiner_layers=1, n_heads=2, n_kv_heads=2, norm_eps=1e-5, qk_norm=True, cap_feat_dim=16,
        rope_theta=256.0, t_scale=1000.0, axes_dims=[8, 4, 4], axes_lens=[256, 32, 32],
    )  # fmt: skip
    with torch.no_grad():  # created with torch.empty: fixed, as diffusers' tests do
        transformer.x_pad_token.copy_(torch.ones_like(transformer.x_pad_token))
        transformer.cap_pad_token.copy_(torch.ones_like(transformer.cap_pad_token))
    torch.manual_seed(_SEED)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], block_out_channels=[32, 64],
        layers_per_block=1, latent_channels=16, sample_size=32, scaling_factor=0.3611, shift_factor=0.1159,
    )  # fmt: skip
    torch.manual_seed(_SEED)
    text_encoder = Qwen3Model(Qwen3Config(
        hidden_size=16, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, head_dim=8, vocab_size=len(parts["qwen"]), max_position_embeddings=512,
    ))  # fmt: skip
    # Z-Image Turbo's scheduler config: a fixed shift of 3 (mu is passed but not used).
    return ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae, text_encoder=text_encoder,
        tokenizer=parts["qwen"], transformer=transformer,
    )  # fmt: skip


def _flux2_klein(parts: dict[str, Any], distilled: bool):  # -> Flux2KleinPipeline
    from diffusers import (
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2KleinPipeline,
        Flux2Transformer2DModel,
    )
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(_SEED)
    # joint_attention_dim: the three Qwen3 layers the pipeline reads (9, 18, 27), 16 wide each.
    transformer = Flux2Transformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=48, timestep_guidance_channels=256,
        axes_dims_rope=(4, 4, 4, 4), guidance_embeds=False,
    )  # fmt: skip
    torch.manual_seed(_SEED)
    vae = AutoencoderKLFlux2(
        sample_size=32, in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
        latent_channels=4, norm_num_groups=4, use_quant_conv=False, use_post_quant_conv=False,
    )  # fmt: skip
    with torch.no_grad():  # latent statistics that are not the identity, so the decode uses them
        vae.bn.running_mean.copy_(torch.randn_like(vae.bn.running_mean) * 0.1)
        vae.bn.running_var.copy_(torch.rand_like(vae.bn.running_var) + 0.5)
    torch.manual_seed(_SEED)
    # 28 layers (hidden 16), so layers 9, 18 and 27 are inner ones as in the real 36-layer encoder.
    text_encoder = Qwen3ForCausalLM(Qwen3Config(
        hidden_size=16, intermediate_size=16, num_hidden_layers=28, num_attention_heads=2,
        num_key_value_heads=2, head_dim=8, vocab_size=len(parts["qwen"]), max_position_embeddings=512,
    ))  # fmt: skip
    # Klein's scheduler config: the shift is the pipeline's empirical mu (steps and tokens).
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True)
    return Flux2KleinPipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=parts["qwen"],
        transformer=transformer, is_distilled=distilled,
    )  # fmt: skip


def _t5(d_model: int, vocab_size: int):  # -> T5EncoderModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(_SEED)
    return T5EncoderModel(T5Config(
        vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    ))  # fmt: skip


def _vae():  # -> AutoencoderKL
    from diffusers import AutoencoderKL

    torch.manual_seed(_SEED)
    return AutoencoderKL(
        block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), sample_size=32,
        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035,
    )  # fmt: skip


def _clip(projection: bool):  # -> CLIPTextModel(WithProjection)
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(_SEED)
    config = _text_config(hidden_act="gelu", projection_dim=32)
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def _flux(parts: dict[str, Any], dev: bool):  # -> FluxPipeline
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(_SEED)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
        axes_dims_rope=(4, 4, 8), guidance_embeds=dev,
    )  # fmt: skip
    # Flux.1's own scheduler config: the shift depends on the image's token count (mu).
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096,
    )  # fmt: skip
    return FluxPipeline(
        scheduler=scheduler, vae=_vae(), text_encoder=_clip(False), tokenizer=parts["clip"],
        text_encoder_2=_t5(32, len(parts["t5"])), tokenizer_2=parts["t5"], transformer=transformer,
    )  # fmt: skip


def _sd3(parts: dict[str, Any]):  # -> StableDiffusion3Pipeline
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )

    torch.manual_seed(_SEED)
    transformer = SD3Transformer2DModel(
        sample_size=32, patch_size=1, in_channels=4, num_layers=1, attention_head_dim=8,
        num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=64,
        pooled_projection_dim=64, out_channels=4,
    )  # fmt: skip
    return StableDiffusion3Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=_vae(), transformer=transformer,
        text_encoder=_clip(True), tokenizer=parts["clip"],
        text_encoder_2=_clip(True), tokenizer_2=parts["clip"],
        text_encoder_3=_t5(64, len(parts["t5"])), tokenizer_3=parts["t5"],
    )  # fmt: skip


def build_tiny_transformer(root: Path, variant: Variant) -> Path:
    """Build the tiny ``variant`` pipeline under ``root/pipeline``; returns ``root``."""
    from transformers import AutoTokenizer, CLIPTokenizer

    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as raw:
        make_tokenizer(Path(raw, "clip"))
        make_t5_tokenizer(Path(raw, "t5"))
        make_qwen_tokenizer(Path(raw, "qwen"))
        parts = {"clip": CLIPTokenizer.from_pretrained(Path(raw, "clip")),
                 "t5": AutoTokenizer.from_pretrained(Path(raw, "t5")),
                 "qwen": AutoTokenizer.from_pretrained(Path(raw, "qwen"))}  # fmt: skip
        if variant == "sd3":
            pipe = _sd3(parts)
        elif variant == "z-image":
            pipe = _z_image(parts)
        elif variant.startswith("flux2-klein"):
            pipe = _flux2_klein(parts, distilled=variant == "flux2-klein-distilled")
        else:
            pipe = _flux(parts, dev=variant == "flux-dev")
        pipe.save_pretrained(root / "pipeline", safe_serialization=True)
    return root


def ensure_tiny_transformer(root: Path, variant: Variant) -> Path:
    """Build once, as ``tiny.ensure_tiny`` (``tiny.build_once``)."""
    return build_once(root, lambda folder: build_tiny_transformer(folder, variant))

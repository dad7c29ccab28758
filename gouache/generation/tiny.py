"""builtin:tiny: SD- and SDXL-shaped models with random weights, built from config in code.

Nothing can be downloaded here, yet the loading, batching and denoising code must run for real.
So the components are built at the sizes of diffusers' own tests' ``get_dummy_components()``
(UNet/VAE ``block_out_channels=(32, 64)``, 32x32 latents for 64x64 images), seeded, and saved
with ``save_pretrained`` (safetensors) in diffusers' layout, to be loaded back through the very
same ``from_pretrained`` path as a real checkpoint. The images are noise: label them so.

Layout written by ``build_tiny(root)``::

    root/pipeline/          diffusers pipeline directory (model_index.json, unet/, vae/, ...)
    root/controlnet-depth/  ControlNetModel matching the UNet
    root/clip/              CLIPModel + processor for diversity scores
    root/preview-decoder/   AutoencoderTiny (TAESD-shaped) for cheap denoising frames
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch

__all__ = ["LABEL", "Family", "build_tiny", "ensure_tiny", "make_tokenizer", "build_tiny_depth_estimator",
           "ensure_tiny_depth_estimator", "build_single_file_pair"]

LABEL = "builtin:tiny (random weights: noise only)"
Family = Literal["sd", "sdxl"]
_DONE = ".complete"
_SEED = 0
_LETTERS = "etaoinshrdlu"


def _bytes_to_unicode() -> dict[int, str]:
    # The byte-to-printable-character table of GPT-2/CLIP byte-level BPE.
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


def _vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """A small CLIP-style vocabulary: every byte, word-final bytes, common letter pairs."""
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars]
    merges = []
    for a in _LETTERS:
        for b in _LETTERS:
            merges += [f"{a} {b}", f"{a} {b}</w>"]
            tokens += [a + b, a + b + "</w>"]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}, merges


def make_tokenizer(directory: Path) -> None:
    """Write a CLIPTokenizer built from a generated vocab.json + merges.txt into ``directory``."""
    from transformers import CLIPTokenizer

    vocab, merges = _vocab_and_merges()
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as raw:
        vocab_file, merges_file = Path(raw, "vocab.json"), Path(raw, "merges.txt")
        vocab_file.write_text(json.dumps(vocab), encoding="utf-8")
        merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        tokenizer = CLIPTokenizer(
            vocab=str(vocab_file), merges=str(merges_file), model_max_length=77
        )
        tokenizer.save_pretrained(directory)


def _text_config(**extra: object):  # -> CLIPTextConfig
    from transformers import CLIPTextConfig

    vocab, _ = _vocab_and_merges()
    config: dict[str, object] = dict(
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=5,
        vocab_size=1000,
    )
    return CLIPTextConfig(**(config | extra))


def _unet(family: Family, width_2: int = 32):  # -> UNet2DConditionModel
    from diffusers import UNet2DConditionModel

    common = dict(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    )
    if family == "sd":
        return UNet2DConditionModel(cross_attention_dim=32, **common)
    return UNet2DConditionModel(
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 time ids * 8 + 32 pooled
        cross_attention_dim=32 + width_2,
        norm_num_groups=1,
        **common,
    )


def _vae():  # -> AutoencoderKL
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        sample_size=64,
    )


def _scheduler(family: Family):
    from diffusers import DDIMScheduler, EulerDiscreteScheduler

    shared = dict(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    if family == "sd":
        return DDIMScheduler(clip_sample=False, set_alpha_to_one=False, **shared)
    return EulerDiscreteScheduler(**shared)


def _controlnet(family: Family):  # -> ControlNetModel
    from diffusers import ControlNetModel

    if family == "sd":
        return ControlNetModel(
            block_out_channels=(32, 64),
            layers_per_block=2,
            in_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            cross_attention_dim=32,
            conditioning_embedding_out_channels=(16, 32),
        )
    return ControlNetModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        in_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        conditioning_embedding_out_channels=(16, 32),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,
        cross_attention_dim=64,
        norm_num_groups=1,
    )


def _pipeline(family: Family, tokenizer_dir: Path, width_2: int = 32):  # -> DiffusionPipeline
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(_SEED)
    unet = _unet(family, width_2)
    torch.manual_seed(_SEED)
    vae = _vae()
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(_SEED)
    if family == "sd":
        text_encoder = CLIPTextModel(_text_config())
        return StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=_scheduler(family),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    text_encoder = CLIPTextModel(_text_config(hidden_act="gelu", projection_dim=32))
    torch.manual_seed(_SEED)
    text_encoder_2 = CLIPTextModelWithProjection(
        _text_config(hidden_act="gelu", projection_dim=32, hidden_size=width_2)
    )
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=CLIPTokenizer.from_pretrained(tokenizer_dir),
        unet=unet,
        scheduler=_scheduler(family),
        force_zeros_for_empty_prompt=True,
    )


def _clip(directory: Path, tokenizer_dir: Path) -> None:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    torch.manual_seed(_SEED)
    text = _text_config(projection_dim=32).to_dict()
    vision = dict(
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        image_size=32,
        patch_size=4,
        projection_dim=32,
    )
    CLIPModel(
        CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)
    ).save_pretrained(directory, safe_serialization=True)
    CLIPTokenizer.from_pretrained(tokenizer_dir).save_pretrained(directory)
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(directory)


def _preview_decoder():  # -> AutoencoderTiny
    from diffusers import AutoencoderTiny

    # Two blocks: one 2x upsampling, matching the tiny VAE's scale factor of 2.
    return AutoencoderTiny(
        encoder_block_out_channels=(32, 32),
        decoder_block_out_channels=(32, 32),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
        latent_channels=4,
    )


def build_tiny(root: Path, family: Family = "sd") -> Path:
    """Build the tiny pipeline and its helper models under ``root``; returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = root / "_tokenizer"
    make_tokenizer(tokenizer_dir)
    _pipeline(family, tokenizer_dir).save_pretrained(root / "pipeline", safe_serialization=True)
    torch.manual_seed(_SEED)
    controlnet = _controlnet(family)
    # A ControlNet starts with zero convolutions, so a fresh one ignores its map; give them
    # small random weights (as diffusers' ControlNet tests do) so the depth path is exercised.
    zero_convs = (
        *controlnet.controlnet_down_blocks,
        controlnet.controlnet_mid_block,
        controlnet.controlnet_cond_embedding.conv_out,
    )
    for zero_conv in zero_convs:
        torch.nn.init.normal_(zero_conv.weight, std=0.05)
    controlnet.save_pretrained(root / "controlnet-depth", safe_serialization=True)
    torch.manual_seed(_SEED)
    _preview_decoder().save_pretrained(root / "preview-decoder", safe_serialization=True)
    _clip(root / "clip", tokenizer_dir)
    shutil.rmtree(tokenizer_dir)
    return root


def build_once(root: Path, build: Callable[[Path], object]) -> Path:
    """Build ``root`` with ``build(folder)`` once: concurrent processes build into a temporary
    sibling and rename it into place; a finished folder is marked complete and kept."""
    if (root / _DONE).is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=root.name + ".", dir=root.parent))
    try:
        build(staging)
        (staging / _DONE).write_text(LABEL + "\n", encoding="utf-8")
        try:
            os.replace(staging, root)
        except OSError:
            if not (root / _DONE).is_file():  # another process won only if it finished
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def ensure_tiny(root: Path, family: Family = "sd") -> Path:
    """Build builtin:tiny once (``build_once``)."""
    return build_once(root, lambda folder: build_tiny(folder, family))


def build_tiny_depth_estimator(root: Path, kind: Literal["dpt", "depth_anything"] = "dpt") -> Path:
    """A tiny random-weight transformers depth estimator (DPT or Depth Anything) in ``root``,
    saved with ``save_pretrained`` with its image processor, so ``pipeline("depth-estimation")``
    loads it like a real checkpoint."""
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    torch.manual_seed(_SEED)
    if kind == "dpt":
        config = DPTConfig(
            image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=4,
            num_attention_heads=4, intermediate_size=37, backbone_out_indices=[0, 1, 2, 3],
            neck_hidden_sizes=[16, 16, 32, 32], fusion_hidden_size=16, is_hybrid=False,
            reassemble_factors=[4, 2, 1, 0.5], head_in_index=-1,
        )  # fmt: skip
        model: torch.nn.Module = DPTForDepthEstimation(config)
    else:
        from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

        backbone = Dinov2Config(
            image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=4,
            num_attention_heads=4, intermediate_size=37, out_features=["stage1", "stage2", "stage3", "stage4"],
            out_indices=[1, 2, 3, 4], reshape_hidden_states=False,
        )  # fmt: skip
        config = DepthAnythingConfig(
            backbone_config=backbone, reassemble_hidden_size=32, patch_size=8,
            neck_hidden_sizes=[16, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=16,
            reassemble_factors=[4, 2, 1, 0.5],
        )  # fmt: skip
        model = DepthAnythingForDepthEstimation(config)
    processor = DPTImageProcessor(
        size={"height": 32, "width": 32}, keep_aspect_ratio=False, ensure_multiple_of=8,
        do_pad=False,
    )  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(root, safe_serialization=True)
    processor.save_pretrained(root)
    return root


def ensure_tiny_depth_estimator(root: Path) -> Path:
    """Build builtin:tiny's depth estimator once (a tiny random DPT), like ``ensure_tiny``."""
    return build_once(root, build_tiny_depth_estimator)


def build_single_file_pair(root: Path, family: Family = "sd") -> tuple[Path, Path, Path]:
    """A tiny pipeline as a folder, the same weights as ONE original-layout ``.safetensors``,
    and a config folder (the folder without weights): ``(folder, file, config)``.

    The SDXL one's second text encoder is wider than the first, as in the real SDXL, because
    diffusers tells SDXL's two encoders in a single file apart by their widths.
    """
    from gouache.generation.ldm_layout import write_single_file

    tokenizer_dir = root / "_tokenizer"
    make_tokenizer(tokenizer_dir)
    pipeline = _pipeline(family, tokenizer_dir, width_2=48 if family == "sdxl" else 32)
    folder, config = root / "pipeline", root / "config"
    pipeline.save_pretrained(folder, safe_serialization=True)
    shutil.copytree(folder, config, ignore=shutil.ignore_patterns("*.safetensors"))
    shutil.rmtree(tokenizer_dir)
    return folder, write_single_file(pipeline.components, root / f"tiny-{family}.safetensors"), config

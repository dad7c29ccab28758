"""Write a diffusers SD/SDXL pipeline as ONE checkpoint in the original (LDM) key layout.

People download fine-tunes as single ``.safetensors`` files in the layout of the original
Stable Diffusion code (``model.diffusion_model.*``, ``first_stage_model.*``,
``cond_stage_model.*`` / ``conditioner.embedders.*``); gouache reads them with diffusers'
``from_single_file``. diffusers ships only that direction (``loaders/single_file_utils.py``,
0.42.1), so this module is its inverse, written from those conversion functions, for what
cannot be downloaded here: the tests and the GPU check turn the tiny models into such a file
and prove the single-file path gives the folder's images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

__all__ = ["ldm_state_dict", "write_single_file"]

_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
           ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"),
           ("conv_shortcut", "skip_connection"))  # fmt: skip
_UNET_LAYERS = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
                "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
                "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}  # fmt: skip
_VAE_ATTENTION = (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out"))
_OPEN_CLIP = ((".layer_norm1.", ".ln_1."), (".layer_norm2.", ".ln_2."), (".mlp.fc1.", ".mlp.c_fc."),
              (".mlp.fc2.", ".mlp.c_proj."), (".self_attn.out_proj.", ".attn.out_proj."))  # fmt: skip


def _unet_key(key: str, layers: int, up_attention: set[int]) -> str:
    head, _, leaf = key.rpartition(".")
    for ours, theirs in _UNET_LAYERS.items():
        if head == ours:
            return f"{theirs}.{leaf}"
    parts = key.split(".")
    if parts[0] == "mid_block":
        index = {"resnets.0": 0, "attentions.0": 1, "resnets.1": 2}[f"{parts[1]}.{parts[2]}"]
        rest = ".".join(parts[3:])
        return f"middle_block.{index}.{_resnet(rest) if parts[1] == 'resnets' else rest}"
    block, kind, j, rest = int(parts[1]), parts[2], parts[3], ".".join(parts[4:])
    if parts[0] == "down_blocks":
        first = 1 + block * (layers + 1)
        if kind == "downsamplers":
            return f"input_blocks.{first + layers}.0.op.{rest.removeprefix('conv.')}"
        slot = "0" if kind == "resnets" else "1"
        return f"input_blocks.{first + int(j)}.{slot}.{_resnet(rest) if kind == 'resnets' else rest}"
    first = block * (layers + 1)
    if kind == "upsamplers":
        return f"output_blocks.{first + layers}.{2 if block in up_attention else 1}.{rest}"
    slot = "0" if kind == "resnets" else "1"
    return f"output_blocks.{first + int(j)}.{slot}.{_resnet(rest) if kind == 'resnets' else rest}"


def _resnet(rest: str) -> str:
    for ours, theirs in _RESNET:
        if rest.startswith(ours + "."):
            return theirs + rest[len(ours) :]
    return rest


def _vae_key(key: str, blocks: int) -> str:
    parts = key.split(".")
    if len(parts) == 2 or parts[1] in ("conv_in", "conv_out", "conv_norm_out"):
        return key.replace("conv_norm_out", "norm_out")
    side, where = parts[0], parts[1]
    if where == "mid_block":
        kind, index, rest = parts[2], int(parts[3]), ".".join(parts[4:])
        if kind == "resnets":
            return f"{side}.mid.block_{index + 1}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
        for ours, theirs in _VAE_ATTENTION:
            if rest.startswith(ours + "."):
                rest = theirs + rest[len(ours) :]
        return f"{side}.mid.attn_1.{rest}"
    block, kind, rest = int(parts[2]), parts[3], ".".join(parts[5:])
    level = block if side == "encoder" else blocks - 1 - block
    stage = "down" if side == "encoder" else "up"
    if kind in ("downsamplers", "upsamplers"):
        return f"{side}.{stage}.{level}.{'downsample' if side == 'encoder' else 'upsample'}.{rest}"
    return f"{side}.{stage}.{level}.block.{parts[4]}.{rest.replace('conv_shortcut', 'nin_shortcut')}"


def _clip_keys(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """transformers' CLIPTextModel as the LDM FrozenCLIPEmbedder held it (``text_model.*``)."""
    return {prefix + (k if k.startswith("text_model.") else "text_model." + k): v for k, v in state.items()}


def _open_clip_keys(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """CLIPTextModelWithProjection as OpenCLIP's text tower (SDXL's second encoder)."""
    out: dict[str, torch.Tensor] = {}
    state = {k.removeprefix("text_model."): v for k, v in state.items()}
    out[prefix + "positional_embedding"] = state.pop("embeddings.position_embedding.weight")
    out[prefix + "token_embedding.weight"] = state.pop("embeddings.token_embedding.weight")
    out[prefix + "text_projection"] = state.pop("text_projection.weight").T.contiguous()
    state.pop("embeddings.position_ids", None)
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key.startswith("final_layer_norm."):
            out[prefix + "ln_final." + key.split(".")[-1]] = value
            continue
        layer = key.replace("encoder.layers.", "transformer.resblocks.")
        for proj in ("q_proj", "k_proj", "v_proj"):
            if f".self_attn.{proj}." in layer:
                base, leaf = layer.split(f".self_attn.{proj}.")
                qkv.setdefault(f"{base}.attn.in_proj_{leaf}", {})[proj] = value
                break
        else:
            for ours, theirs in _OPEN_CLIP:
                layer = layer.replace(ours, theirs)
            out[prefix + layer] = value
    for key, parts in qkv.items():
        out[prefix + key] = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]])
    return out


def ldm_state_dict(components: dict[str, Any]) -> dict[str, torch.Tensor]:
    """One state dict in the original layout from a pipeline's components (SD or SDXL)."""
    unet, vae = components["unet"], components["vae"]
    layers = unet.config.layers_per_block
    up_attention = {i for i, name in enumerate(unet.config.up_block_types) if "CrossAttn" in name}
    out = {f"model.diffusion_model.{_unet_key(k, layers, up_attention)}": v
           for k, v in unet.state_dict().items()}  # fmt: skip
    blocks = len(vae.config.block_out_channels)
    out |= {f"first_stage_model.{_vae_key(k, blocks)}": v for k, v in vae.state_dict().items()}
    text = components["text_encoder"].state_dict()
    if components.get("text_encoder_2") is None:
        out |= _clip_keys(text, "cond_stage_model.transformer.")
    else:
        out |= _clip_keys(text, "conditioner.embedders.0.transformer.")
        out |= _open_clip_keys(components["text_encoder_2"].state_dict(), "conditioner.embedders.1.model.")
    return {k: v.detach().contiguous() for k, v in out.items() if not k.endswith("position_ids")}


def write_single_file(components: dict[str, Any], path: Path) -> Path:
    """Save ``components`` as one ``.safetensors`` (or ``.ckpt``, a pickled ``state_dict``)."""
    state = ldm_state_dict(components)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".ckpt":
        torch.save({"state_dict": state}, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    return path

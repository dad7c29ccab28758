"""Random low-rank LoRA files for the tiny models, in diffusers/PEFT and kohya layouts.

diffusers/PEFT: ``unet.<module>.lora_A.weight`` / ``lora_B`` (no alphas: scaling 1), as
``save_lora_weights`` writes. kohya (Civitai): ``lora_unet_<module with _>.lora_down.weight`` /
``lora_up`` plus an ``alpha`` scalar per module, text encoder ``lora_te_...``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

UNET_TARGETS = ("attn1.to_q", "attn1.to_v", "attn2.to_k", "attn2.to_out.0", "ff.net.2")
TEXT_TARGETS = ("self_attn.q_proj", "self_attn.v_proj", "self_attn.out_proj")
CONV_TARGETS = ("resnets.0.conv1",)


def lora_modules(module: torch.nn.Module, targets: tuple[str, ...]) -> dict[str, torch.nn.Module]:
    return {name: m for name, m in module.named_modules()
            if name.endswith(targets) and isinstance(m, torch.nn.Linear | torch.nn.Conv2d)}  # fmt: skip


def _pair(layer: torch.nn.Module, rank: int, g: torch.Generator, size: float) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(layer, torch.nn.Conv2d):
        down = torch.randn(rank, layer.in_channels, *layer.kernel_size, generator=g) * size
        up = torch.randn(layer.out_channels, rank, 1, 1, generator=g) * size
    else:
        down = torch.randn(rank, layer.in_features, generator=g) * size
        up = torch.randn(layer.out_features, rank, generator=g) * size
    return down, up


def write_peft(path: Path, unet: torch.nn.Module, text_encoder: torch.nn.Module | None, *,
               seed: int, rank: int = 4, size: float = 0.15, config: dict | None = None) -> Path:  # fmt: skip
    """``config``: the adapter config diffusers' ``save_lora_weights`` stores in the metadata
    (``lora_alpha``, ``alpha_pattern``, ...), the same for every part."""
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    parts = [("unet", unet, UNET_TARGETS)]
    if text_encoder is not None:
        parts.append(("text_encoder", text_encoder, TEXT_TARGETS))
    for prefix, root, targets in parts:
        for name, layer in lora_modules(root, targets).items():
            down, up = _pair(layer, rank, g, size)
            tensors[f"{prefix}.{name}.lora_A.weight"] = down.contiguous()
            tensors[f"{prefix}.{name}.lora_B.weight"] = up.contiguous()
    metadata = None
    if config is not None:
        packed = {}
        for prefix, root, targets in parts:
            modules = sorted({name.split(".")[-1] if not name.endswith(".0") else name.split(".")[-2] + ".0"
                              for name in lora_modules(root, targets)})  # fmt: skip
            packed.update({f"{prefix}.{k}": v for k, v in {"r": rank, "target_modules": modules, **config}.items()})
        metadata = {"format": "pt", "lora_adapter_metadata": json.dumps(packed, sort_keys=True)}
    save_file(tensors, str(path), metadata=metadata)
    return path


def write_kohya(path: Path, unet: torch.nn.Module, text_encoder: torch.nn.Module | None, *,
                seed: int, rank: int = 4, alpha: float = 2.0, size: float = 0.15) -> Path:  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    parts = [("lora_unet", unet, UNET_TARGETS + CONV_TARGETS)]
    if text_encoder is not None:
        parts.append(("lora_te", text_encoder, TEXT_TARGETS))
    for prefix, root, targets in parts:
        for name, layer in lora_modules(root, targets).items():
            down, up = _pair(layer, rank, g, size)
            if prefix == "lora_te" and not name.startswith("text_model."):
                name = "text_model." + name  # kohya names the CLIP text model's modules so
            key = f"{prefix}_{name.replace('.', '_')}"
            tensors[f"{key}.lora_down.weight"] = down.contiguous()
            tensors[f"{key}.lora_up.weight"] = up.contiguous()
            tensors[f"{key}.alpha"] = torch.tensor(alpha)
    save_file(tensors, str(path), metadata={"ss_network_module": "networks.lora"})
    return path

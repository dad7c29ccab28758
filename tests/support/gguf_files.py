"""GGUF transformer files written in a test, laid out as the published ones.

Real GGUF diffusion files (city96's FLUX.1 and SD3.5, the Z-Image ones) are written by
llama.cpp's ``gguf`` package from the original checkpoints: the large 2-D weights quantized
(here Q8_0, blocks of 32 along a row), while biases, norms and the small or odd-shaped tensors
stay F32 or F16. ``write_gguf`` follows that rule; ``z_image_original_layout`` renames a
diffusers Z-Image state dict to the original (ComfyUI) keys such files carry, the inverse of
diffusers 0.42.1 ``convert_z_image_transformer_checkpoint_to_diffusers`` (fused ``qkv``,
``out``, ``q_norm``/``k_norm``, ``x_embedder``, ``final_layer``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

Q8_0_BLOCK = 32


def write_gguf(path: Path, state_dict: dict[str, torch.Tensor], arch: str) -> dict[str, str]:
    """Write ``state_dict`` to ``path``; returns each tensor's GGML type by name."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch=arch)
    kinds: dict[str, str] = {}
    for name, tensor in state_dict.items():
        data = tensor.detach().float().numpy()
        if data.ndim == 2 and data.shape[1] % Q8_0_BLOCK == 0 and data.shape[0] > 1:
            qtype = gguf.GGMLQuantizationType.Q8_0
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        elif data.ndim == 2:
            qtype = gguf.GGMLQuantizationType.F16
            writer.add_tensor(name, data.astype(np.float16))
        else:
            qtype = gguf.GGMLQuantizationType.F32
            writer.add_tensor(name, data)
        kinds[name] = qtype.name
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return kinds


_Z_IMAGE_RENAMES = (
    ("all_final_layer.2-1.", "final_layer."),
    ("all_x_embedder.2-1.", "x_embedder."),
    (".attention.to_out.0.", ".attention.out."),
    (".attention.norm_q.", ".attention.q_norm."),
    (".attention.norm_k.", ".attention.k_norm."),
)


def z_image_original_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers ``ZImageTransformer2DModel`` state dict under the original keys."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if ".attention.to_k." in key or ".attention.to_v." in key:
            continue
        if ".attention.to_q." in key:
            parts = [state_dict[key.replace(".to_q.", f".to_{p}.")] for p in "qkv"]
            out[key.replace(".to_q.", ".qkv.")] = torch.cat(parts, dim=0)
            continue
        for old, new in _Z_IMAGE_RENAMES:
            key = key.replace(old, new)
        out[key] = value
    return out

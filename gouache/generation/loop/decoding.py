"""The one decode path: latents to [-1, 1] pixels, fitting the card, never black.

Every decode goes through here: finished lanes, denoising frames, ``--process`` noising.

- Out of memory (``device.is_out_of_memory``, cuBLAS/cuDNN allocation failures included) on a
  chunk of lanes: the chunk is retried one lane at a time (the loop's own VAE slicing), a lane
  that still does not fit is decoded with a tiled VAE whose tiles are half the latent's side
  (diffusers' default tile is the model's native size, so at native sizes it never tiles), and
  only a lane that fails even tiled comes back as ``None``: its item fails alone (or, for a
  denoising frame, the frame is dropped). The latents are kept, so no step is re-run.
- A non-finite decode (an fp16 VAE that overflows, as many SD 1.5 fine-tunes' do) upcasts the
  model's VAE to fp32 once, for good, and decodes again: any family, any decode.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from gouache.generation.loop.device import free_device_memory, is_out_of_memory

if TYPE_CHECKING:
    from collections.abc import Iterator

    from gouache.generation.families.base import LoadedModel

__all__ = ["decode", "decode_each", "tiled_vae"]

log = logging.getLogger(__name__)

# (indices of the latents about to be decoded, whether frames): a test seam raising OOM
Check = Callable[[Sequence[int]], None]


def decode(model: LoadedModel, latents: torch.Tensor, tiled: bool = False, *, frames: bool = False) -> torch.Tensor:
    """The family's decode (its preview decoder for ``frames``), retried in fp32 when not finite."""
    family = model.family
    preview = frames and not tiled
    image = family.decode_frames(model, latents) if preview else family.decode(model, latents, tiled)
    if bool(torch.isfinite(image).all()) or model.vae.dtype == torch.float32:
        return image
    if preview and model.preview_decoder is not None:
        return image.nan_to_num(0.0)  # a preview frame: not worth an fp32 VAE
    log.warning("model %s: the %s VAE decoded non-finite values; it runs in float32 from now on",
                model.name, model.vae.dtype)  # fmt: skip
    model.vae.to(dtype=torch.float32)
    return family.decode(model, latents, tiled)


def decode_each(
    model: LoadedModel,
    latents: Sequence[torch.Tensor],
    chunk: int,
    *,
    frames: bool = False,
    check: Check | None = None,
) -> list[torch.Tensor | None]:
    """Decode each latent (batch dimension 1) in chunks of ``chunk``; ``None`` where one did
    not fit even alone and tiled."""
    out: list[torch.Tensor | None] = [None] * len(latents)
    for start in range(0, len(latents), max(1, chunk)):
        indices = list(range(start, min(start + max(1, chunk), len(latents))))
        _decode_chunk(model, latents, indices, out, frames, check)
    return out


def _decode_chunk(
    model: LoadedModel,
    latents: Sequence[torch.Tensor],
    indices: list[int],
    out: list[torch.Tensor | None],
    frames: bool,
    check: Check | None,
) -> None:
    try:
        if check is not None:
            check(indices)
        images = decode(model, torch.cat([latents[i] for i in indices]), frames=frames)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        free_device_memory()
        if len(indices) > 1:  # one lane at a time
            for index in indices:
                _decode_chunk(model, latents, [index], out, frames, check)
            return
        out[indices[0]] = _tiled_alone(model, latents[indices[0]], frames, check, indices)
        return
    for index, image in zip(indices, images, strict=True):
        out[index] = image.unsqueeze(0)


def _tiled_alone(
    model: LoadedModel, latent: torch.Tensor, frames: bool, check: Check | None, indices: list[int]
) -> torch.Tensor | None:
    try:
        if check is not None:
            check(indices)
        return decode(model, latent, tiled=True, frames=frames)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        free_device_memory()
        return None


@contextmanager
def tiled_vae(vae: Any, latents: torch.Tensor, on: bool = True) -> Iterator[None]:
    """The VAE tiled with tiles of half the latent's shorter side (and restored after)."""
    if not on or not hasattr(vae, "enable_tiling") or not hasattr(vae, "tile_latent_min_size"):
        yield
        return
    saved = (vae.tile_sample_min_size, vae.tile_latent_min_size, getattr(vae, "use_tiling", False))
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    tile = max(4, min(latents.shape[-2:]) // 2)
    vae.tile_latent_min_size, vae.tile_sample_min_size = tile, tile * factor
    vae.enable_tiling()
    try:
        yield
    finally:
        vae.tile_sample_min_size, vae.tile_latent_min_size = saved[0], saved[1]
        vae.use_tiling = saved[2]

"""Tiles for an upscale past the model's comfortable size, and their seamless blend.

An image-to-image pass at a size far above what a model was trained on repeats subjects and
needs memory that grows with the area, so /upscale redraws a large output in overlapping tiles
of a comfortable size. The tiles are image-to-image items of one running batch on one canvas
(``BatchItem.region``): they denoise in step and their overlapping latents are merged after
every step (``loop/regions.py``, MultiDiffusion), so they agree where they overlap. Each tile
is decoded on its own and the pictures are put back together here with the same raised-cosine
weights (``ramp``), which hides what the VAE decoder drew differently near a tile's
edge. No maintained library blends arbitrary PIL tiles (diffusers' tiled VAE blends inside the
VAE only), hence this small module.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

__all__ = ["Box", "blend_tiles", "ramp", "tile_boxes", "tile_overlap"]

Box = tuple[int, int, int, int]  # left, top, right, bottom


def tile_overlap(tile: int) -> int:
    """How far neighbouring tiles overlap at least: a quarter of a tile (the blend's ramps
    reach to each tile's middle whatever this is; more overlap only adds tiles)."""
    return max(8, tile // 4)


def _side(total: int, tile: int, align: int) -> int:
    """A tile's side along a side of ``total``: at most ``tile``, and ``total`` less a multiple
    of ``align`` (so the last tile, flush with the far edge, starts on the latent grid)."""
    if total <= tile:
        return total
    return total - -(-(total - tile) // align) * align


def _starts(total: int, tile: int, overlap: int, align: int) -> list[int]:
    """Tile origins along one side: evenly spread, at least ``overlap`` apart, multiples of
    ``align``."""
    if total <= tile:
        return [0]
    stride = max(align, tile - overlap)
    count = max(2, -(-(total - overlap) // stride))
    return [int(round(i * (total - tile) / (count - 1) / align)) * align for i in range(count)]


def tile_boxes(width: int, height: int, tile: int, overlap: int, align: int = 8) -> list[Box]:
    """Boxes of at most ``tile`` x ``tile``, all of one size, covering ``width`` x ``height``,
    overlapping by ``overlap`` pixels or more, row by row, corners on multiples of ``align``
    (the model's latent cell)."""
    tw, th = _side(width, tile, align), _side(height, tile, align)
    return [(x, y, x + tw, y + th) for y in _starts(height, th, overlap, align)
            for x in _starts(width, tw, overlap, align)]  # fmt: skip


def ramp(start: int, size: int, total: int) -> np.ndarray:
    """One axis's weights for a tile of ``size`` at ``start`` on a side of ``total``: rising
    from near 0 at an edge shared with a neighbour to 1 at half the tile along a raised cosine
    (zero slope at both ends: no kink where a tile begins), 1 at the canvas's own edges."""
    half = max(1, size // 2)
    position = np.arange(size, dtype=np.float64) + 0.5
    weight = np.ones(size)
    if start > 0:
        weight = np.minimum(weight, _rise(position / half))
    if start + size < total:
        weight = np.minimum(weight, _rise((size - position) / half))
    return weight


def _rise(t: np.ndarray) -> np.ndarray:
    """0 -> 1 over ``t`` in 0..1 (1 past it), with zero slope at both ends."""
    return (1.0 - np.cos(np.pi * np.clip(t, 0.0, 1.0))) / 2.0


def blend_tiles(tiles: Sequence[Image.Image], boxes: Sequence[Box], width: int, height: int) -> Image.Image:
    """The tiles put back together, each overlap a raised-cosine cross-fade."""
    total = np.zeros((height, width, 3))
    weights = np.zeros((height, width, 1))
    for tile, (left, top, right, bottom) in zip(tiles, boxes, strict=True):
        pixels = np.asarray(tile.convert("RGB"), dtype=np.float64)
        w = np.outer(ramp(top, bottom - top, height), ramp(left, right - left, width))
        total[top:bottom, left:right] += pixels * w[..., None]
        weights[top:bottom, left:right] += w[..., None]
    out = total / np.maximum(weights, 1e-12)
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))

"""Tiles for an upscale past the model's comfortable size, and their seamless blend.

An image-to-image pass at a size far above what a model was trained on repeats subjects and
needs memory that grows with the area, so /upscale redraws a large output in overlapping tiles
of a comfortable size (each an ordinary image-to-image item of one running batch) and blends
them back with weights that ramp linearly from each shared edge to the tile's middle: each
pixel is a weighted mean whose weights change by a small step per pixel, so no border shows.
No maintained library does this for arbitrary PIL tiles (diffusers' tiled VAE blends latents
inside the VAE only), hence this small module.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

__all__ = ["Box", "tile_boxes", "tile_overlap", "blend_tiles"]

Box = tuple[int, int, int, int]  # left, top, right, bottom


def tile_overlap(tile: int) -> int:
    """How far neighbouring tiles overlap at least: a quarter of a tile (the blend's ramps
    reach to each tile's middle whatever this is; more overlap only adds tiles)."""
    return max(8, tile // 4)


def _starts(total: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one side: evenly spread, at least ``overlap`` apart, multiples of 8."""
    if total <= tile:
        return [0]
    stride = max(8, tile - overlap)
    count = -(-(total - overlap) // stride)
    count = max(count, 2)
    return [int(round(i * (total - tile) / (count - 1) / 8)) * 8 for i in range(count)]


def tile_boxes(width: int, height: int, tile: int, overlap: int) -> list[Box]:
    """Boxes of at most ``tile`` x ``tile`` covering ``width`` x ``height``, overlapping by
    ``overlap`` pixels or more, row by row."""
    tw, th = min(tile, width), min(tile, height)
    return [(x, y, x + tw, y + th) for y in _starts(height, tile, overlap)
            for x in _starts(width, tile, overlap)]  # fmt: skip


def _ramp(start: int, size: int, total: int, overlap: int) -> np.ndarray:
    """One axis's weights: rising from near 0 at an edge shared with a neighbour to 1 at half
    the tile along a raised cosine, so a tile's own edge (where its convolutions saw padding)
    counts least, the neighbour whose middle it is counts most, and the cross-fade starts and
    ends with zero slope: no kink where a tile begins (a tent's slope jumps there, and the
    jump shows as a line)."""
    overlap = max(overlap, size // 2)
    position = np.arange(size, dtype=np.float64) + 0.5
    weight = np.ones(size)
    if start > 0:
        weight = np.minimum(weight, _rise(position / overlap))
    if start + size < total:
        weight = np.minimum(weight, _rise((size - position) / overlap))
    return weight


def _rise(t: np.ndarray) -> np.ndarray:
    """0 -> 1 over ``t`` in 0..1 (1 past it), with zero slope at both ends."""
    return (1.0 - np.cos(np.pi * np.clip(t, 0.0, 1.0))) / 2.0


def blend_tiles(tiles: Sequence[Image.Image], boxes: Sequence[Box], width: int, height: int,
                overlap: int) -> Image.Image:  # fmt: skip
    """The tiles put back together, each overlap a linear cross-fade."""
    total = np.zeros((height, width, 3))
    weights = np.zeros((height, width, 1))
    for tile, (left, top, right, bottom) in zip(tiles, boxes, strict=True):
        pixels = np.asarray(tile.convert("RGB"), dtype=np.float64)
        w = np.outer(_ramp(top, bottom - top, height, overlap), _ramp(left, right - left, width, overlap))
        total[top:bottom, left:right] += pixels * w[..., None]
        weights[top:bottom, left:right] += w[..., None]
    out = total / np.maximum(weights, 1e-12)
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))

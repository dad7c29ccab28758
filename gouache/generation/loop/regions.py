"""Lanes that are tiles of one canvas, kept in agreement while they denoise (MultiDiffusion).

A tiled upscale redraws a large image in overlapping tiles of a comfortable size. Denoised
independently, two tiles disagree where they overlap (each drew its own detail there), and no
blend of their pixels hides that entirely. MultiDiffusion (Bar-Tal et al. 2023, "MultiDiffusion:
Fusing Diffusion Paths for Controlled Image Generation"; diffusers'
``StableDiffusionPanoramaPipeline``) makes them agree: the tiles are lanes of one running batch
at the same step, and after every step their latents are laid on the full canvas, the overlaps
averaged, and each tile's crop written back, so what the next step sees in an overlap is the
same for every tile that covers it.

Two choices differ from the panorama pipeline's plain mean: the mean is weighted by the
raised-cosine ramps of ``upscale.ramp`` (a tile's own edge, where its convolutions saw padding, counts
least; the tile whose middle it is counts most), and the first latents of image-to-image tiles
(each encoded from its own crop and noised from its own generator) are not averaged but taken
from the tile whose weight is highest there: a mean of independent noises has less variance
than the step's noise level, which the denoiser would read as a smoother image.

Nothing here knows a model family: a lane's latents are ``(1, channels, h, w)`` over its box.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from gouache.generation.loop.batch import Region
from gouache.generation.loop.lanes import Lane
from gouache.generation.upscale import ramp

__all__ = ["agree", "canvas", "check_region", "finished_canvases", "in_step"]

Canvas = tuple[str, int]  # the canvas and the image index: image k of every tile is one picture


def check_region(region: Region, width: int, height: int, latent: tuple[int, ...]) -> None:
    """A tile must be the batch's size with its corners on the latent grid of ``latent``."""
    left, top, right, bottom = region.box
    cell = width // latent[-1]
    on_grid = all(v % cell == 0 for v in (left, top, *region.size))
    if (right - left, bottom - top) != (width, height) or not on_grid or width % cell:
        raise ValueError(f"region {region} is not a {width}x{height} box on a {cell} px latent grid")
    if left < 0 or top < 0 or right > region.size[0] or bottom > region.size[1]:
        raise ValueError(f"region {region} leaves its canvas")


def _canvas(lane: Lane) -> Canvas | None:
    region = lane.item.region
    return None if region is None else (region.canvas, lane.index)


def in_step(lanes: Sequence[Lane]) -> list[Lane]:
    """``lanes`` less those ahead of another lane of their canvas: a canvas's lanes step
    together even when the row budget cannot take all of them in one step."""
    slowest: dict[Canvas, int] = {}
    for lane in lanes:
        key = _canvas(lane)
        if key is not None:
            slowest[key] = min(slowest.get(key, lane.i), lane.i)
    return [lane for lane in lanes if (key := _canvas(lane)) is None or lane.i == slowest[key]]


def agree(lanes: Iterable[Lane], touched: Iterable[Lane], *, start: bool = False) -> None:
    """Bring the canvases of the ``touched`` lanes into agreement among all their ``lanes``,
    where every lane of a canvas is at the same step (the weighted mean of the overlaps, or
    with ``start`` each latent from its heaviest tile)."""
    wanted = {key for lane in touched if (key := _canvas(lane)) is not None}
    groups: dict[Canvas, list[Lane]] = {}
    for lane in lanes:
        key = _canvas(lane)
        if key in wanted:
            groups.setdefault(key, []).append(lane)
    for group in groups.values():
        if len(group) > 1 and len({lane.i for lane in group}) == 1:
            _merge(group, start)


def _merge(group: list[Lane], start: bool) -> None:
    """Lay ``group``'s latents on their canvas, merge the overlaps, write each crop back."""
    merged, boxes = _lay(group, start)
    for lane, (left, top, right, bottom) in zip(group, boxes, strict=True):
        lane.latents = merged[..., top:bottom, left:right].to(lane.latents.dtype).contiguous()


def finished_canvases(finished: Sequence[Lane], denoising: Sequence[Lane]) -> list[list[Lane]]:
    """The canvases whose every lane is in ``finished`` (none still ``denoising``), each its
    lanes in ``finished`` order: they are decoded whole, once (``canvas``)."""
    busy = {key for lane in denoising if (key := _canvas(lane)) is not None}
    groups: dict[Canvas, list[Lane]] = {}
    for lane in finished:
        key = _canvas(lane)
        if key is not None and key not in busy:
            groups.setdefault(key, []).append(lane)
    return list(groups.values())


def canvas(group: Sequence[Lane]) -> tuple[torch.Tensor, list[tuple[int, int, int, int]]]:
    """The canvas's latents (the tiles' weighted mean, equal to every tile where they agree)
    and each lane's box on it in pixels, for one decode of the whole picture: no tile edge
    of the VAE decoder shows."""
    merged, _ = _lay(list(group), start=False)
    boxes = []
    for lane in group:
        assert lane.item.region is not None
        boxes.append(lane.item.region.box)
    return merged.to(group[0].latents.dtype), boxes


def _lay(group: list[Lane], start: bool) -> tuple[torch.Tensor, list[tuple[int, int, int, int]]]:
    """The canvas of ``group``'s latents (float32: the weighted mean of the overlaps, or with
    ``start`` each latent from its heaviest tile) and each lane's box on it in latents."""
    first = group[0].latents
    region = group[0].item.region
    assert region is not None
    cell = (region.box[2] - region.box[0]) // first.shape[-1]
    width, height = region.size[0] // cell, region.size[1] // cell
    total = torch.zeros((*first.shape[:2], height, width), dtype=torch.float32, device=first.device)
    weight = torch.zeros((1, 1, height, width), dtype=torch.float32, device=first.device)
    boxes = []
    for lane in group:
        assert lane.item.region is not None
        left, top, right, bottom = (v // cell for v in lane.item.region.box)
        boxes.append((left, top, right, bottom))
        w = np.outer(ramp(top, bottom - top, height), ramp(left, right - left, width))
        w_t = torch.from_numpy(w).to(device=first.device, dtype=torch.float32)[None, None]
        here = (..., slice(top, bottom), slice(left, right))
        latents = lane.latents.to(torch.float32)
        if start:  # each latent from its heaviest tile (ties: the first)
            total[here] = torch.where(w_t > weight[here], latents, total[here])
            weight[here] = torch.maximum(weight[here], w_t)
        else:
            total[here] += latents * w_t
            weight[here] += w_t
    return (total if start else total / weight.clamp_min(1e-12)), boxes

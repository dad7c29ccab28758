"""Denoising frames to a looping GIF that always fits the chat platform's upload cap.

Discord and Slack refuse files over their limits, and a refused GIF is a failed job for a
feature that is only a nicety. So this never fails on size: it drops frames first (keeping the
first and last, the story's ends), then scales down, then reduces colours, then drops to the
two ends, and as a last resort returns the final image alone, tiny. Same input, same bytes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from PIL import Image

__all__ = ["encode_gif", "DEFAULT_MAX_BYTES"]

DEFAULT_MAX_BYTES = 8 * 1024 * 1024
_FRAME_FLOOR = 8  # frames kept before scaling starts: fewer reads as a slideshow
_MIN_LONG_SIDE = 64  # pixels on the long side before colours are reduced instead
_MIN_COLOURS = 16
_MAX_TRIES = 32


@dataclass(frozen=True)
class _Plan:
    """One attempt: how many frames, at what scale, with how many palette colours."""

    count: int
    scale: float = 1.0
    colours: int = 256


def encode_gif(
    frames: Sequence[Image.Image],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    frame_ms: int = 120,
    hold_ms: int = 1500,
) -> bytes:
    """A looping GIF of ``frames`` whose last frame is held for ``hold_ms``, within ``max_bytes``."""
    if not frames:
        raise ValueError("encode_gif needs at least one frame")
    images = _prepare(frames)
    width, height = images[-1].size
    floor = min(len(images), _FRAME_FLOOR)
    min_scale = min(1.0, _MIN_LONG_SIDE / max(width, height))
    plan: _Plan | None = _first_plan(images, max_bytes, floor, frame_ms, hold_ms)
    for _ in range(_MAX_TRIES):
        if plan is None:
            break
        data = _encode(images, plan, frame_ms, hold_ms)
        if len(data) <= max_bytes:
            return data
        plan = _shrink(plan, max_bytes / len(data), floor, min_scale)
    return _last_frame_alone(images[-1], max_bytes, hold_ms)


def _prepare(frames: Sequence[Image.Image]) -> list[Image.Image]:
    """RGB frames all at the final frame's size (earlier previews may be smaller)."""
    size = frames[-1].size
    out = []
    for frame in frames:
        rgb = frame if frame.mode == "RGB" else frame.convert("RGB")
        out.append(rgb if rgb.size == size else rgb.resize(size, Image.Resampling.BILINEAR))
    return out


def _first_plan(
    images: Sequence[Image.Image], max_bytes: int, floor: int, frame_ms: int, hold_ms: int
) -> _Plan:
    """All frames, unless encoding the two ends shows that cannot fit: saves a full encode."""
    if len(images) <= floor:
        return _Plan(count=len(images))
    per_frame = len(_encode(images, _Plan(count=2), frame_ms, hold_ms)) / 2
    fits = int(max_bytes / per_frame * 0.9)
    return _Plan(count=len(images) if fits >= len(images) else max(floor, fits))


def _shrink(plan: _Plan, ratio: float, floor: int, min_scale: float) -> _Plan | None:
    """The next, smaller attempt, sized by how far over the cap the last one was."""
    target = ratio * 0.9  # aim a little under: sizes do not scale exactly
    if plan.count > floor:
        return replace(plan, count=max(floor, min(plan.count - 1, int(plan.count * target))))
    if plan.scale > min_scale:
        scale = min(plan.scale * 0.85, plan.scale * math.sqrt(target))
        return replace(plan, scale=max(min_scale, scale))
    if plan.colours > _MIN_COLOURS:
        return replace(plan, colours=max(_MIN_COLOURS, plan.colours // 4))
    if plan.count > 2:
        return replace(plan, count=max(2, min(plan.count - 1, int(plan.count * target))))
    return None


def _spread(total: int, count: int) -> list[int]:
    """``count`` indices evenly over ``range(total)``, always including the first and last."""
    if count >= total:
        return list(range(total))
    if count <= 1:
        return [total - 1]
    return sorted({round(i * (total - 1) / (count - 1)) for i in range(count)})


def _encode(images: Sequence[Image.Image], plan: _Plan, frame_ms: int, hold_ms: int) -> bytes:
    chosen = [images[i] for i in _spread(len(images), plan.count)]
    width, height = chosen[-1].size
    size = (max(1, round(width * plan.scale)), max(1, round(height * plan.scale)))
    paletted = [_quantize(image, size, plan.colours) for image in chosen]
    durations = [frame_ms] * (len(paletted) - 1) + [max(frame_ms, hold_ms)]
    buffer = io.BytesIO()
    paletted[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=paletted[1:],
        duration=durations,
        loop=0,
        optimize=False,
    )
    return buffer.getvalue()


def _quantize(image: Image.Image, size: tuple[int, int], colours: int) -> Image.Image:
    if image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    return image.quantize(colors=colours, method=Image.Quantize.MEDIANCUT)


def _last_frame_alone(image: Image.Image, max_bytes: int, hold_ms: int) -> bytes:
    """The final image as a one-frame GIF, halved until it fits (or is one pixel)."""
    long_side = min(max(image.size), _MIN_LONG_SIDE)
    while True:
        scale = long_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        buffer = io.BytesIO()
        _quantize(image, size, _MIN_COLOURS).save(buffer, format="GIF", duration=hold_ms, loop=0)
        if buffer.tell() <= max_bytes or long_side == 1:
            return buffer.getvalue()
        long_side = max(1, long_side // 2)

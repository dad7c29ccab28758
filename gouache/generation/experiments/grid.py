"""Labelled image grids (sweeps) and labelled strips (the process, interpolations), with Pillow."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["labelled_grid", "labelled_strip"]

_MIN_CELL = 128  # tiny models make 32x32 images: cells are scaled up (nearest) to be readable
_PAD = 4


def _font(size: int = 14):  # noqa: ANN202 - a Pillow font of either kind
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _scaled(image: Image, side: int) -> Image:
    from PIL import Image as PILImage

    factor = max(1, -(-side // max(1, min(image.size))))
    if factor == 1:
        return image.convert("RGB")
    return image.convert("RGB").resize((image.width * factor, image.height * factor), PILImage.Resampling.NEAREST)


def _text_size(draw, text: str, font) -> tuple[int, int]:  # noqa: ANN001
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return int(right - left), int(bottom - top)


def labelled_grid(
    images: Sequence[Image],
    columns: tuple[str, Sequence[str]],
    rows: tuple[str, Sequence[str]] | None = None,
    title: str = "",
) -> Image:
    """``images`` row-major (``len(rows) * len(columns)``), the column axis's name and values
    along the top edge and the row axis's along the left edge."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    col_name, col_values = columns
    row_name, row_values = rows if rows is not None else ("", [""])
    if len(images) != len(col_values) * len(row_values):
        raise ValueError(f"{len(images)} images for a {len(row_values)}x{len(col_values)} grid")
    side = max(_MIN_CELL, *(min(im.size) for im in images))
    cells = [_scaled(im, side) for im in images]
    cw, ch = max(c.width for c in cells), max(c.height for c in cells)
    font = _font()
    probe = ImageDraw.Draw(PILImage.new("RGB", (1, 1)))
    col_labels = [f"{col_name}={v}" for v in col_values]
    row_labels = [f"{row_name}={v}" for v in row_values] if rows is not None else [""]
    line = max(_text_size(probe, t or "x", font)[1] for t in [*col_labels, *row_labels, title or "x"]) + 2 * _PAD
    left = max(_text_size(probe, t, font)[0] for t in row_labels) + 2 * _PAD if rows is not None else 0
    top = line * (2 if title else 1)
    grid = PILImage.new("RGB", (left + len(col_values) * (cw + _PAD) + _PAD, top + len(row_values) * (ch + _PAD) + _PAD), "white")
    draw = ImageDraw.Draw(grid)
    if title:
        draw.text((_PAD, _PAD), title, fill="black", font=font)
    for c, label in enumerate(col_labels):
        w, _ = _text_size(draw, label, font)
        draw.text((left + _PAD + c * (cw + _PAD) + (cw - w) // 2, top - line + _PAD), label, fill="black", font=font)
    for r, label in enumerate(row_labels):
        _, h = _text_size(draw, label or "x", font)
        draw.text((_PAD, top + _PAD + r * (ch + _PAD) + (ch - h) // 2), label, fill="black", font=font)
    for n, cell in enumerate(cells):
        r, c = divmod(n, len(col_values))
        x = left + _PAD + c * (cw + _PAD) + (cw - cell.width) // 2
        y = top + _PAD + r * (ch + _PAD) + (ch - cell.height) // 2
        grid.paste(cell, (x, y))
    return grid


def labelled_strip(images: Sequence[Image], labels: Sequence[str], title: str = "") -> Image:
    """One row of frames, a label (e.g. the timestep) under each."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    if len(images) != len(labels):
        raise ValueError("one label per frame")
    side = max(96, *(min(im.size) for im in images))
    cells = [_scaled(im, side) for im in images]
    cw, ch = max(c.width for c in cells), max(c.height for c in cells)
    font = _font(12)
    probe = ImageDraw.Draw(PILImage.new("RGB", (1, 1)))
    line = max(_text_size(probe, t or "x", font)[1] for t in [*labels, title or "x"]) + 2 * _PAD
    top = line if title else 0
    strip = PILImage.new("RGB", (len(cells) * (cw + _PAD) + _PAD, top + ch + line + _PAD), "white")
    draw = ImageDraw.Draw(strip)
    if title:
        draw.text((_PAD, _PAD), title, fill="black", font=font)
    for n, (cell, label) in enumerate(zip(cells, labels, strict=True)):
        x = _PAD + n * (cw + _PAD)
        strip.paste(cell, (x + (cw - cell.width) // 2, top + _PAD))
        w, _ = _text_size(draw, label, font)
        draw.text((x + (cw - w) // 2, top + _PAD + ch + _PAD), label, fill="black", font=font)
    return strip

"""The /diversity report a person reads at a glance: a text block and one composite picture.

The text (the report's ``summary``) says how many *effectively distinct* images the set holds
out of N, for content and for style (Vendi), which pairs are near-duplicates, how well the
images follow the prompt (CLIP score), and a one-line verdict; with a baseline, every figure
reads ``before -> after``. Each kind of figure has one rounding rule. The picture is the
labelled grid beside the semantic and style distance heatmaps, each in the leaf order of an
average-linkage clustering, so clusters show as blocks on the diagonal; it carries no copy of
the summary (every surface shows the text beside it). Drawn with Pillow only, laid out for
the set's size so no text is clipped or overlaps another (``draw_report`` says where each is).
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from gouache.generation.diversity.metrics import cluster_order
from gouache.generation.diversity.scorer import NEAR_DUPLICATE, DiversityReport, DiversityScorer

__all__ = ["report_text", "verdict", "composite", "composite_png", "draw_report", "Drawing", "PlacedText", "FONT",
           "scored"]


def _ratio(report: DiversityReport) -> float:
    figures = report.semantic or report.style
    return figures.vendi_per_image


def verdict(report: DiversityReport) -> str:
    """One line: how varied the set is, by content (colour when no encoder is configured)."""
    n, ratio = report.images, _ratio(report)
    what = "content" if report.semantic is not None else "colour"
    if ratio >= 0.6:
        line = f"varied: most of the {n} images differ in {what}"
    elif ratio >= 0.35:
        line = f"some variety: about {ratio * n:.0f} distinct {what} looks among {n}"
    else:
        line = f"low diversity: the {n} images are mostly one {what} look"
    if report.near_duplicates:
        line += f"; {len(report.near_duplicates)} near-duplicate pair(s)"
    return line


# One rounding rule per kind of figure, wherever it shows (the summary, the picture): effective
# numbers of images (Vendi, VS-inf) to 0.01 (a before -> after pair of 1.68 -> 1.66 reads as
# the -1% it is; to 0.1 it read 1.7 -> 1.6), distances to 0.001, CLIP scores to 0.1.
_COUNT, _DISTANCE, _CLIP = 2, 3, 1


def _distance(value: float) -> str:
    return f"{value:.{_DISTANCE}f}"


def _clip(value: float) -> str:
    return f"{value:.{_CLIP}f}"


def _fmt(value: float | None, before: float | None, digits: int) -> str:
    if value is None:
        return "n/a"
    if before is None:
        return f"{value:.{digits}f}"
    change = f" ({(value - before) / before:+.0%})".replace("-0%", "+0%") if before else ""
    return f"{before:.{digits}f} -> {value:.{digits}f}{change}"


def report_text(report: DiversityReport, before: DiversityReport | None = None, method: str = "") -> str:
    """The text block; with ``before`` (same seeds, no enlargement) each figure is paired."""
    n = report.images
    lines = []
    if before is not None:
        lines.append(f"enlarged with {method or 'a method'}: baseline -> enlarged, same seeds")
    sem, b_sem = report.semantic, before.semantic if before else None
    if sem is not None:
        lines.append(
            f"content: {_fmt(sem.vendi, b_sem.vendi if b_sem else None, _COUNT)} distinct of {n} "
            f"(Vendi; VS-inf {_fmt(sem.vendi_infinity, b_sem.vendi_infinity if b_sem else None, _COUNT)}, "
            f"mean distance {_fmt(sem.mean_distance, b_sem.mean_distance if b_sem else None, _DISTANCE)})"
        )
    sty, b_sty = report.style, before.style if before else None
    lines.append(
        f"style: {_fmt(sty.vendi, b_sty.vendi if b_sty else None, _COUNT)} distinct of {n} "
        f"(Vendi on colour histograms; VS-inf {_fmt(sty.vendi_infinity, b_sty.vendi_infinity if b_sty else None, _COUNT)})"
    )
    if report.style_encoder is not None:
        b_enc = before.style_encoder if before else None
        lines.append(f"style (encoder Gram features): {_fmt(report.style_encoder.vendi, b_enc.vendi if b_enc else None, _COUNT)} distinct of {n}")
    pairs = ", ".join(f"{i + 1}&{j + 1}" for i, j in report.near_duplicates) or "none"
    lines.append(f"near-duplicates (similarity >= {NEAR_DUPLICATE:g}): {pairs}")
    if report.fidelity is not None:
        worst = int(np.argmin(report.clip_scores))
        lines.append(
            f"fidelity: mean CLIP score {_fmt(report.fidelity, before.fidelity if before else None, _CLIP)} "
            f"(lowest: image {worst + 1}, {_clip(report.clip_scores[worst])})"
        )
    lines.append(f"verdict: {verdict(report)}")
    return "\n".join(lines)


# Pillow's own FreeType face (always there, so every machine draws the same picture). Its space
# is 2-3 px at any small size, so words ran together ("distinctof 4"): texts are drawn word by
# word, _SPACE apart per space.
FONT = ImageFont.load_default(size=13)
_LINE = sum(FONT.getmetrics())
_SPACE = 5  # the height every text slot is given: ascent + descent
_PAD, _APART, _GAP = 8, 20, 4  # around the picture and between tiles; between panels; text to what it labels
_THUMB = 96
_BG, _INK = (255, 255, 255), (20, 20, 20)
_HEATMAPS = (("semantic", "content distance (image encoder)"), ("style", "style distance (colour histograms)"))

Box = tuple[int, int, int, int]  # left, top, right, bottom


@dataclass(frozen=True)
class PlacedText:
    """One text drawn on the picture (with ``FONT``): its panel and where each word was drawn."""

    panel: str
    text: str
    words: tuple[tuple[tuple[int, int], str], ...]


@dataclass
class Drawing:
    """The composite and how it is laid out: each panel's box, every text drawn in it, and the
    pictures (thumbnails, heatmap matrices) no text may cover."""

    image: Image.Image
    panels: dict[str, Box] = field(default_factory=dict)
    texts: list[PlacedText] = field(default_factory=list)
    pictures: list[Box] = field(default_factory=list)


class _Pen:
    """Draws one panel of a ``Drawing`` at ``origin``, recording the box of every text."""

    def __init__(self, drawing: Drawing, name: str, origin: tuple[int, int], size: tuple[int, int]) -> None:
        self.drawing, self.name, self.origin = drawing, name, origin
        self.draw = ImageDraw.Draw(drawing.image)
        drawing.panels[name] = (origin[0], origin[1], origin[0] + size[0], origin[1] + size[1])

    def at(self, x: int, y: int) -> tuple[int, int]:
        return self.origin[0] + x, self.origin[1] + y

    def text(self, x: int, y: int, text: str) -> None:
        left, top = self.at(x, y)
        words = tuple(((left + dx, top), word) for dx, word in _words(text))
        for xy, word in words:
            self.draw.text(xy, word, fill=_INK, font=FONT)
        self.drawing.texts.append(PlacedText(self.name, text, words))

    def picture(self, x: int, y: int, width: int, height: int) -> Box:
        """Claim a ``width`` x ``height`` picture at (x, y); its box on the canvas."""
        left, top = self.at(x, y)
        box = (left, top, left + width, top + height)
        self.drawing.pictures.append(box)
        return box


def _words(text: str) -> list[tuple[int, str]]:
    """Each word of ``text`` and its offset: one ``_SPACE`` per space after the previous word's
    advance."""
    out, x = [], 0
    for gap, word in re.findall(r"( *)(\S+)", text):
        x += len(gap) * _SPACE
        out.append((x, word))
        x += int(np.ceil(FONT.getlength(word)))
    return out


def _width(text: str) -> int:
    """The room ``text`` needs from where it is drawn (its ink may reach past its advance)."""
    x, word = _words(text)[-1]
    return x + int(np.ceil(max(FONT.getlength(word), FONT.getbbox(word)[2])))


def _colour(value: float) -> tuple[int, int, int]:
    """0 (alike) dark blue -> 1 (different) yellow, through teal and green (viridis-like)."""
    stops = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], float)
    x = float(np.clip(value, 0.0, 1.0)) * (len(stops) - 1)
    lo = int(np.floor(x))
    hi = min(lo + 1, len(stops) - 1)
    c = stops[lo] + (stops[hi] - stops[lo]) * (x - lo)
    r, g, b = (int(round(v)) for v in c)
    return r, g, b


@dataclass(frozen=True, eq=False)
class _Heatmap:
    """One distance heatmap's layout: index labels left and on top, title above, scale below."""

    title: str
    distance: np.ndarray
    order: list[int]
    cell: int
    left: int  # the matrix's left edge (after the row labels)
    top: int  # its top edge (after the title and the column labels)

    @classmethod
    def of(cls, kernel: np.ndarray, title: str, side: int) -> _Heatmap:
        distance = np.clip(1.0 - kernel, 0.0, None)
        np.fill_diagonal(distance, 0.0)
        order = cluster_order(distance)
        n = len(order)
        index_w = max(_width(str(i + 1)) for i in range(n))
        cell = max(_LINE, index_w + _GAP, side // n)  # every index label fits its row and column
        return cls(title, distance, order, cell, index_w + _GAP, 2 * _LINE + _GAP)

    @property
    def peak(self) -> float:  # the largest distance: the yellow end of the scale
        return float(self.distance.max())

    @property
    def caption(self) -> str:
        return f"distance 0 (dark) .. {_distance(self.peak)} (yellow)"

    @property
    def size(self) -> tuple[int, int]:
        matrix = len(self.order) * self.cell
        width = max(self.left + matrix, _width(self.title), _width(self.caption))
        return width, self.top + matrix + _GAP + _LINE

    def draw(self, pen: _Pen) -> None:
        pen.text(0, 0, self.title)
        cell, n = self.cell, len(self.order)
        left, top, _, _ = pen.picture(self.left, self.top, n * cell, n * cell)
        scale = self.peak or 1.0
        for r, i in enumerate(self.order):
            label = str(i + 1)
            pen.text(0, self.top + r * cell + (cell - _LINE) // 2, label)
            pen.text(self.left + r * cell + (cell - _width(label)) // 2, _LINE + _GAP // 2, label)
            for c, j in enumerate(self.order):
                x0, y0 = left + c * cell, top + r * cell
                pen.draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=_colour(self.distance[i, j] / scale))
        pen.text(0, self.top + n * cell + _GAP, self.caption)


def _labels(report: DiversityReport) -> list[str]:
    """Each tile's label: its number, its CLIP score, and "dup" for a near-duplicate."""
    dupes = {i for pair in report.near_duplicates for i in pair}
    labels = []
    for k in range(report.images):
        label = f"{k + 1}"
        if report.clip_scores:
            label += f": clip {_clip(report.clip_scores[k])}"
        labels.append(label + (", dup" if k in dupes else ""))
    return labels


def _grid_shape(n: int, labels: Sequence[str]) -> tuple[int, int, int]:
    """(columns, column width, row height): up to 4 columns, each as wide as its widest label."""
    cols = min(n, 4)
    return cols, max(_THUMB, *(_width(label) for label in labels)), _THUMB + _GAP + _LINE


def _grid_size(n: int, labels: Sequence[str]) -> tuple[int, int]:
    cols, col_w, row_h = _grid_shape(n, labels)
    rows = -(-n // cols)
    return cols * col_w + (cols - 1) * _PAD, rows * row_h + (rows - 1) * _PAD


def _draw_grid(pen: _Pen, images: Sequence[Image.Image], report: DiversityReport) -> None:
    labels = _labels(report)
    cols, col_w, row_h = _grid_shape(len(images), labels)
    dupes = {i for pair in report.near_duplicates for i in pair}
    for k, image in enumerate(images):
        x, y = (k % cols) * (col_w + _PAD), (k // cols) * (row_h + _PAD)
        small = image.convert("RGB")
        resample = Image.Resampling.NEAREST if max(small.size) < _THUMB else Image.Resampling.LANCZOS
        x0, y0, _, _ = pen.picture(x, y, _THUMB, _THUMB)
        pen.drawing.image.paste(small.resize((_THUMB, _THUMB), resample), (x0, y0))
        if k in dupes:  # a red frame, inside the thumbnail's own square
            pen.draw.rectangle([x0, y0, x0 + _THUMB - 1, y0 + _THUMB - 1], outline=(220, 40, 40), width=2)
        pen.text(x, y + _THUMB + _GAP, labels[k])


def draw_report(images: Sequence[Image.Image], report: DiversityReport) -> Drawing:
    """The labelled grid beside the semantic and style heatmaps, laid out for the set's size:
    every column as wide as its widest label, heatmap cells at least as big as their index
    labels, every panel as wide as its title and scale. The summary is not drawn: every
    surface shows the picture beside the report's text (the page, the chat caption, the CLI)."""
    grid_size = _grid_size(len(images), _labels(report))
    side = max(120, min(240, grid_size[1] - 3 * _LINE))
    maps = {name: _Heatmap.of(report.kernels[name], title, side) for name, title in _HEATMAPS if name in report.kernels}
    sizes = [("grid", grid_size), *((name, heatmap.size) for name, heatmap in maps.items())]
    width = 2 * _PAD + sum(w for _, (w, _) in sizes) + _APART * (len(sizes) - 1)
    height = 2 * _PAD + max(h for _, (_, h) in sizes)
    drawing = Drawing(Image.new("RGB", (width, height), _BG))
    x = _PAD
    for name, size in sizes:
        pen = _Pen(drawing, name, (x, _PAD), size)
        if name == "grid":
            _draw_grid(pen, images, report)
        else:
            maps[name].draw(pen)
        x += size[0] + _APART
    return drawing


def composite(images: Sequence[Image.Image], report: DiversityReport) -> Image.Image:
    """The report's picture: the labelled grid and the distance heatmaps (``draw_report``)."""
    return draw_report(images, report).image


def composite_png(images: Sequence[Image.Image], report: DiversityReport) -> bytes:
    buffer = io.BytesIO()
    composite(images, report).save(buffer, format="PNG")
    return buffer.getvalue()


def scored(
    scorer: DiversityScorer,
    model: str,
    prompt: str,
    images: Sequence[Image.Image],
    baseline: Sequence[Image.Image] | None = None,
    method: str = "",
) -> tuple[dict[str, Any], bytes]:
    """The report (JSON-ready, ``summary`` = the text block) and its composite PNG; with a
    ``baseline`` (same seeds, not enlarged) every figure reads before -> after."""
    report = scorer.report(model, prompt, images)
    data = report.to_dict()
    text = report_text(report)
    if baseline is not None:
        before = scorer.report(model, prompt, baseline)
        text = report_text(report, before, method)
        data["baseline"] = before.to_dict()
        data["enlarge"] = method
    data["summary"] = text
    return data, composite_png(images, report)

"""The /diversity report a person reads at a glance: a text block and one composite picture.

The text says how many *effectively distinct* images the set holds out of N, for content and
for style (Vendi), which pairs are near-duplicates, how well the images follow the prompt
(CLIP score), and a one-line verdict; with a baseline, every figure reads ``before -> after``.
The picture is the labelled grid beside the semantic and style distance heatmaps, each in
the leaf order of an average-linkage clustering, so clusters show as blocks on the diagonal.
Drawn with Pillow only.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from gouache.generation.diversity.metrics import cluster_order
from gouache.generation.diversity.scorer import NEAR_DUPLICATE, DiversityReport, DiversityScorer

__all__ = ["report_text", "verdict", "composite", "composite_png", "scored"]


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


def _fmt(value: float | None, before: float | None, digits: int = 2) -> str:
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
            f"content: {_fmt(sem.vendi, b_sem.vendi if b_sem else None, 1)} distinct of {n} "
            f"(Vendi; VS-inf {_fmt(sem.vendi_infinity, b_sem.vendi_infinity if b_sem else None)}, "
            f"mean distance {_fmt(sem.mean_distance, b_sem.mean_distance if b_sem else None, 3)})"
        )
    sty, b_sty = report.style, before.style if before else None
    lines.append(
        f"style: {_fmt(sty.vendi, b_sty.vendi if b_sty else None, 1)} distinct of {n} "
        f"(Vendi on colour histograms; VS-inf {_fmt(sty.vendi_infinity, b_sty.vendi_infinity if b_sty else None)})"
    )
    if report.style_encoder is not None:
        b_enc = before.style_encoder if before else None
        lines.append(f"style (encoder Gram features): {_fmt(report.style_encoder.vendi, b_enc.vendi if b_enc else None, 1)} distinct of {n}")
    pairs = ", ".join(f"{i + 1}&{j + 1}" for i, j in report.near_duplicates) or "none"
    lines.append(f"near-duplicates (similarity >= {NEAR_DUPLICATE:g}): {pairs}")
    if report.fidelity is not None:
        worst = int(np.argmin(report.clip_scores))
        lines.append(
            f"fidelity: mean CLIP score {_fmt(report.fidelity, before.fidelity if before else None, 1)} "
            f"(lowest: image {worst + 1}, {report.clip_scores[worst]:.1f})"
        )
    lines.append(f"verdict: {verdict(report)}")
    return "\n".join(lines)


_FONT = ImageFont.load_default()
_BG, _INK = (255, 255, 255), (20, 20, 20)


def _colour(value: float) -> tuple[int, int, int]:
    """0 (alike) dark blue -> 1 (different) yellow, through teal and green (viridis-like)."""
    stops = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], float)
    x = float(np.clip(value, 0.0, 1.0)) * (len(stops) - 1)
    lo = int(np.floor(x))
    hi = min(lo + 1, len(stops) - 1)
    c = stops[lo] + (stops[hi] - stops[lo]) * (x - lo)
    r, g, b = (int(round(v)) for v in c)
    return r, g, b


def _heatmap(kernel: np.ndarray, title: str, size: int) -> Image.Image:
    distance = np.clip(1.0 - kernel, 0.0, None)
    np.fill_diagonal(distance, 0.0)
    order = cluster_order(distance)
    n = len(order)
    cell = max(8, size // n)
    top, left = 30, 22
    panel = Image.new("RGB", (left + cell * n + 6, top + cell * n + 30), _BG)
    draw = ImageDraw.Draw(panel)
    draw.text((left, 4), title, fill=_INK, font=_FONT)
    peak = float(distance.max()) or 1.0
    for r, i in enumerate(order):
        draw.text((4, top + r * cell + cell // 2 - 5), str(i + 1), fill=_INK, font=_FONT)
        draw.text((left + r * cell + cell // 2 - 3, top - 12), str(i + 1), fill=_INK, font=_FONT)
        for c, j in enumerate(order):
            x0, y0 = left + c * cell, top + r * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=_colour(distance[i, j] / peak))
    draw.text((left, top + cell * n + 6), f"distance 0 (dark) .. {peak:.3f} (yellow)", fill=_INK, font=_FONT)
    return panel


def _grid(images: Sequence[Image.Image], report: DiversityReport, thumb: int) -> Image.Image:
    n = len(images)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    label_h = 14
    grid = Image.new("RGB", (cols * (thumb + 6) + 6, rows * (thumb + label_h + 6) + 6), _BG)
    draw = ImageDraw.Draw(grid)
    dupes = {i for pair in report.near_duplicates for i in pair}
    for k, image in enumerate(images):
        x, y = 6 + (k % cols) * (thumb + 6), 6 + (k // cols) * (thumb + label_h + 6)
        small = image.convert("RGB")
        resample = Image.Resampling.NEAREST if max(small.size) < thumb else Image.Resampling.LANCZOS
        small = small.resize((thumb, thumb), resample)
        grid.paste(small, (x, y))
        label = f"{k + 1}"
        if report.clip_scores:
            label += f"  clip {report.clip_scores[k]:.1f}"
        if k in dupes:
            label += "  dup"
            draw.rectangle([x - 2, y - 2, x + thumb + 1, y + thumb + 1], outline=(220, 40, 40), width=2)
        draw.text((x, y + thumb + 2), label, fill=_INK, font=_FONT)
    return grid


def composite(
    images: Sequence[Image.Image], report: DiversityReport, *, thumb: int = 96, text: str | None = None
) -> Image.Image:
    """Grid (with per-image labels) + semantic and style heatmaps + the text block, one image."""
    grid = _grid(images, report, thumb)
    side = max(120, min(240, grid.height - 60))
    panels = [_heatmap(report.kernels[name], title, side)
              for name, title in (("semantic", "content distance (image encoder)"),
                                  ("style", "style distance (colour histograms)"))
              if name in report.kernels]  # fmt: skip
    body = text if text is not None else report_text(report)
    lines = body.splitlines()
    text_h = 8 + 13 * len(lines)
    width = grid.width + sum(p.width + 10 for p in panels)
    width = max(width, 8 + 6 * max(len(line) for line in lines))
    height = max([grid.height, *(p.height for p in panels)]) + text_h
    out = Image.new("RGB", (width, height), _BG)
    out.paste(grid, (0, 0))
    x = grid.width + 10
    for panel in panels:
        out.paste(panel, (x, 0))
        x += panel.width + 10
    draw = ImageDraw.Draw(out)
    y = height - text_h + 4
    for line in lines:
        draw.text((8, y), line, fill=_INK, font=_FONT)
        y += 13
    return out


def composite_png(images: Sequence[Image.Image], report: DiversityReport, *, text: str | None = None) -> bytes:
    buffer = io.BytesIO()
    composite(images, report, text=text).save(buffer, format="PNG")
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
    return data, composite_png(images, report, text=text)

"""The report a person reads: the text block, the verdict, before -> after, the composite PNG."""

from __future__ import annotations

import io
import re
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image, ImageDraw

from gouache.generation.diversity.report import (
    FONT,
    PlacedText,
    composite,
    composite_png,
    draw_report,
    report_text,
    scored,
    verdict,
)
from gouache.generation.diversity.scorer import DiversityScorer, diversity_report


def _solid(rgb: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (32, 32), rgb)


COLOURS = [(250, 0, 0), (0, 0, 250), (0, 200, 0), (250, 250, 0), (0, 0, 0), (255, 255, 255)]


def test_text_counts_distinct_images_and_names_near_duplicates() -> None:
    images = [_solid(COLOURS[0]), _solid(COLOURS[0]), _solid(COLOURS[1]), _solid(COLOURS[2])]
    report = diversity_report("squares", images)
    text = report_text(report)
    assert "style: 2.83 distinct of 4" in text  # exp of the entropy of (1/2, 1/4, 1/4)
    assert "near-duplicates (similarity >= 0.95): 1&2" in text
    assert text.splitlines()[-1] == f"verdict: {verdict(report)}"
    assert "near-duplicate pair" in verdict(report)


def test_verdict_follows_the_effective_number() -> None:
    same = diversity_report("x", [_solid(COLOURS[0])] * 6)
    varied = diversity_report("x", [_solid(c) for c in COLOURS])
    assert verdict(same).startswith("low diversity")
    assert verdict(varied).startswith("varied")


def test_before_after_pairs_every_figure() -> None:
    before = diversity_report("x", [_solid(COLOURS[0])] * 4)
    after = diversity_report("x", [_solid(c) for c in COLOURS[:4]])
    text = report_text(after, before, "variants")
    assert text.startswith("enlarged with variants")
    assert "style: 1.00 -> 4.00 (+300%) distinct of 4" in text


def test_composite_has_the_grid_and_two_heatmaps() -> None:
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(5)]
    images[4] = images[0]
    scorer = DiversityScorer()
    data, png = scored(scorer, "any", "noise", images, baseline=[images[0]] * 5, method="cads")
    picture = Image.open(io.BytesIO(png), formats=["PNG"])
    assert picture.width > 4 * 96 + 200 and picture.height > 2 * 96
    assert data["enlarge"] == "cads" and data["baseline"]["style"]["vendi"] == pytest.approx(1.0)
    assert "->" in data["summary"]
    # Without a content encoder only the colour heatmap is drawn: narrower than with both.
    report = diversity_report("noise", images)
    one = composite(images, report)
    report.kernels["semantic"] = report.kernels["style"]
    two = composite(images, report)
    assert two.width > one.width
    assert composite_png(images, report)[:8] == b"\x89PNG\r\n\x1a\n"


def _labelled_set(n: int) -> tuple[list[Image.Image], object]:
    """``n`` noise images, the first two alike (their tiles say "dup"), both heatmaps, and CLIP
    scores up to 100.0 so the tile labels are as long as they get."""
    rng = np.random.default_rng(n)
    images = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]
    images[1] = images[0]
    report = diversity_report("noise", images)
    report.kernels["semantic"] = report.kernels["style"]
    scores = tuple(100.0 if k == n - 1 else float(s) for k, s in enumerate(rng.uniform(10, 40, n)))
    return images, replace(report, clip_scores=scores, semantic=report.style)


def _word_boxes(text: PlacedText) -> list[tuple[float, ...]]:
    """Pillow's ``textbbox`` of every word where the picture drew it."""
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    return [measure.textbbox(xy, word, font=FONT) for xy, word in text.words]


def _union(boxes: list[tuple[float, ...]]) -> tuple[float, ...]:
    return min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)


def _inside(box: tuple[float, ...], outer: tuple[float, ...]) -> bool:
    return outer[0] <= box[0] and outer[1] <= box[1] and box[2] <= outer[2] and box[3] <= outer[3]


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.parametrize("n", [2, 4, 8, 16])
def test_every_text_of_the_picture_lies_in_its_panel_and_overlaps_nothing(n: int) -> None:
    images, report = _labelled_set(n)
    drawing = draw_report(images, report)
    canvas = (0, 0, *drawing.image.size)
    boxes = [(t, _union(_word_boxes(t))) for t in drawing.texts]
    # every text the picture promises is there: titles, scales, both index labels, tile labels
    drawn = [t.text for t in drawing.texts]
    assert {"content distance (image encoder)", "style distance (colour histograms)"} <= set(drawn)
    assert sum(t.startswith("distance 0 (dark) .. ") for t in drawn) == 2
    for k in range(n):
        assert drawn.count(str(k + 1)) == 4, k  # row and column labels of both heatmaps
    assert [t for t in drawn if "clip" in t] == [f"{k + 1}: clip {s:.1f}" + (", dup" if k < 2 else "")
                                               for k, s in enumerate(report.clip_scores)]  # fmt: skip
    panels = list(drawing.panels.values())
    assert sorted(drawing.panels) == ["grid", "semantic", "style"]
    for i, panel in enumerate(panels):
        assert _inside(panel, canvas) and not any(_overlap(panel, other) for other in panels[i + 1 :])
    for i, (text, box) in enumerate(boxes):
        assert _inside(box, canvas), (text, box, canvas)
        assert _inside(box, drawing.panels[text.panel]), (text, box, drawing.panels[text.panel])
        clash = [other.text for other, b in boxes[i + 1 :] if _overlap(box, b)]
        assert not clash, (text, clash)
        assert not any(_overlap(box, p) for p in drawing.pictures), text
        ink = np.asarray(drawing.image.crop(box).convert("L"))
        assert ink.min() < 100, text  # it was drawn there, in dark ink


@pytest.mark.parametrize("n", [2, 16])
def test_words_of_the_pictures_texts_stand_apart(n: int) -> None:
    """A space is a visible gap: every word of a text is drawn, in order, on one line, at least
    4 px of blank from the previous word's ink (Pillow's face left 1-2 px, and "distinct of 4"
    read "distinctof 4"); letters within a word stand 1-2 px apart."""
    images, report = _labelled_set(n)
    spaced = [t for t in draw_report(images, report).texts if " " in t.text]
    assert len(spaced) >= 4
    for text in spaced:
        assert [word for _, word in text.words] == text.text.split()
        boxes = _word_boxes(text)
        assert len({xy[1] for xy, _ in text.words}) == 1, text.text
        for before, after in zip(boxes, boxes[1:], strict=False):
            assert after[0] - before[2] >= 4, (text.text, before, after)


def test_the_picture_does_not_repeat_the_summary_and_figures_round_one_way() -> None:
    images, report = _labelled_set(4)
    text = report_text(report)
    drawn = " ".join(t.text for t in draw_report(images, report).texts)
    assert "verdict" not in drawn and "distinct of" not in drawn  # the summary is shown as text, once
    # effective numbers (Vendi and VS-inf) to 0.01, distances to 0.001, CLIP to 0.1
    assert re.search(r"content: \d+\.\d\d distinct of 4 \(Vendi; VS-inf \d+\.\d\d, mean distance \d\.\d{3}\)", text), text
    assert re.search(r"style: \d+\.\d\d distinct of 4 \(Vendi on colour histograms; VS-inf \d+\.\d\d\)", text), text
    assert re.search(r"fidelity: mean CLIP score \d+\.\d \(lowest: image \d, \d+\.\d\)", text), text

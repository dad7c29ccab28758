"""The report a person reads: the text block, the verdict, before -> after, the composite PNG."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from gouache.generation.diversity.report import (
    composite,
    composite_png,
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
    assert "style: 2.8 distinct of 4" in text  # exp of the entropy of (1/2, 1/4, 1/4)
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
    assert "style: 1.0 -> 4.0 (+300%) distinct of 4" in text


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

"""Diversity scores: Vendi against its published anchors, the colour kernel, CLIP reports."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from gouache.generation.diversity import (
    ClipEmbedder,
    colour_histograms,
    diversity_report,
    style_kernel,
    vendi_score,
)


@pytest.mark.parametrize(("similarity", "expected"), [(0.8, 2.24), (0.7, 2.96), (0.5, 4.65)])
def test_vendi_of_equicorrelated_kernels_matches_the_reference(similarity: float, expected: float) -> None:
    kernel = np.full((8, 8), similarity)
    np.fill_diagonal(kernel, 1.0)
    assert vendi_score(kernel) == pytest.approx(expected, abs=0.01)


def test_vendi_bounds_and_orders() -> None:
    assert vendi_score(np.ones((5, 5))) == pytest.approx(1.0)
    assert vendi_score(np.eye(5)) == pytest.approx(5.0)
    kernel = np.full((6, 6), 0.5)
    np.fill_diagonal(kernel, 1.0)
    # VS_q decreases with q: VS_1 >= VS_2 >= VS_inf
    assert vendi_score(kernel, 1.0) >= vendi_score(kernel, 2.0) >= vendi_score(kernel, float("inf"))


def test_style_kernel_is_psd_with_unit_diagonal_and_tells_colours_apart() -> None:
    red, red2 = Image.new("RGB", (16, 16), (250, 0, 0)), Image.new("RGB", (16, 16), (240, 5, 5))
    blue = Image.new("RGB", (16, 16), (0, 0, 250))
    kernel = style_kernel(colour_histograms([red, red2, blue]))
    assert np.allclose(np.diag(kernel), 1.0)
    assert np.linalg.eigvalsh(kernel).min() > -1e-9
    assert kernel[0, 1] == pytest.approx(1.0) and kernel[0, 2] == pytest.approx(0.0)
    same = diversity_report("red", [red, red2])
    varied = diversity_report("colours", [red, blue])
    assert same.style_vendi == pytest.approx(1.0) and varied.style_vendi == pytest.approx(2.0)
    assert same.semantic_vendi is None and same.clip_scores == ()


def test_report_with_a_clip_model(tiny_model_dir) -> None:
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(3)]
    clip = ClipEmbedder(str(tiny_model_dir / "clip"))
    report = diversity_report("a red fox", images, clip)
    assert report.semantic_vendi is not None and 1.0 <= report.semantic_vendi <= 3.0
    assert len(report.clip_scores) == 3 and all(-100 <= s <= 100 for s in report.clip_scores)
    assert "semantic diversity" in report.summary
    data = report.to_dict()
    assert data["images"] == 3 and data["style_vendi_per_image"] == pytest.approx(report.style_vendi / 3, abs=1e-3)
    with pytest.raises(ValueError, match="at least two"):
        diversity_report("one", images[:1])

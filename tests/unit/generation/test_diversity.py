"""Diversity figures from their definitions: closed forms, and sets whose diversity is known
because we built them (copies of one render vs renders of different demo-world scenes)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from gouache.generation.diversity.metrics import (
    cluster_order,
    cosine_kernel,
    histogram_roots,
    kernel_figures,
    near_duplicates,
    vendi,
    vendi_infinity,
)
from gouache.generation.diversity.report import report_text
from gouache.generation.diversity.scorer import (
    ClipEmbedder,
    Encoders,
    StyleEncoder,
    colour_histograms,
    diversity_report,
    style_kernel,
)

DEMO_CLIP = "gouache/models/demo/clip"


def _equicorrelated(n: int, s: float) -> np.ndarray:
    kernel = np.full((n, n), s)
    np.fill_diagonal(kernel, 1.0)
    return kernel


@pytest.mark.parametrize("n", [2, 5, 8])
def test_identical_items_count_once_and_orthogonal_items_all_count(n: int) -> None:
    same, apart = np.ones((n, n)), np.eye(n)
    assert vendi(same) == pytest.approx(1.0) and vendi_infinity(same) == pytest.approx(1.0)
    assert vendi(apart) == pytest.approx(n) and vendi_infinity(apart) == pytest.approx(n)
    assert kernel_figures(same).mean_distance == pytest.approx(0.0)
    assert kernel_figures(apart).mean_distance == pytest.approx(1.0)
    assert kernel_figures(apart).vendi_per_image == pytest.approx(1.0)
    # From embeddings: n copies of one vector vs the n unit axes.
    assert vendi(cosine_kernel(np.tile([[3.0, 4.0, 0.0]], (n, 1)))) == pytest.approx(1.0)
    assert vendi(cosine_kernel(np.eye(n) * 7)) == pytest.approx(n)


@pytest.mark.parametrize("n", [3, 8, 20])
@pytest.mark.parametrize("s", [0.2, 0.5, 0.7, 0.8])
def test_equicorrelated_kernel_matches_its_closed_form(n: int, s: float) -> None:
    # Eigenvalues of K/n: (1 + (n-1)s)/n once, (1-s)/n (n-1 times).
    big, small = (1 + (n - 1) * s) / n, (1 - s) / n
    entropy = -(big * np.log(big) + (n - 1) * small * np.log(small))
    kernel = _equicorrelated(n, s)
    assert vendi(kernel) == pytest.approx(np.exp(entropy), rel=1e-9)
    assert vendi_infinity(kernel) == pytest.approx(1 / big, rel=1e-9)
    assert kernel_figures(kernel).mean_distance == pytest.approx(1 - s)


@pytest.mark.parametrize(("similarity", "expected"), [(0.8, 2.24), (0.7, 2.96), (0.5, 4.65)])
def test_vendi_matches_the_published_anchors(similarity: float, expected: float) -> None:
    assert vendi(_equicorrelated(8, similarity)) == pytest.approx(expected, abs=0.01)


def test_two_clusters_count_as_two_and_cluster_order_keeps_them_together() -> None:
    # Blocks {0, 2, 4} and {1, 3, 5} of identical items, orthogonal between blocks.
    labels = np.array([0, 1, 0, 1, 0, 1])
    kernel = (labels[:, None] == labels[None, :]).astype(float)
    assert vendi(kernel) == pytest.approx(2.0) and vendi_infinity(kernel) == pytest.approx(2.0)
    order = cluster_order(1 - kernel)
    assert sorted(order) == list(range(6))
    assert {labels[i] for i in order[:3]} == {labels[order[0]]}  # one block, then the other
    pairs = near_duplicates(kernel, 0.95)
    assert {(i, j) for i, j, _ in pairs} == {(0, 2), (0, 4), (2, 4), (1, 3), (1, 5), (3, 5)}
    assert near_duplicates(_equicorrelated(4, 0.9), 0.95) == []


def test_colour_kernel_is_bhattacharyya_psd_with_unit_diagonal() -> None:
    red, red2 = Image.new("RGB", (16, 16), (250, 0, 0)), Image.new("RGB", (16, 16), (240, 5, 5))
    blue = Image.new("RGB", (16, 16), (0, 0, 250))
    half = Image.fromarray(np.concatenate([np.asarray(red)[:8], np.asarray(blue)[8:]]))
    kernel = cosine_kernel(histogram_roots([red, red2, blue, half]))
    assert np.allclose(kernel, style_kernel(colour_histograms([red, red2, blue, half])))
    assert np.allclose(np.diag(kernel), 1.0) and np.linalg.eigvalsh(kernel).min() > -1e-9
    assert kernel[0, 1] == pytest.approx(1.0) and kernel[0, 2] == pytest.approx(0.0)
    assert kernel[0, 3] == pytest.approx(np.sqrt(0.5))  # sum_b sqrt(1 * 0.5)
    assert diversity_report("red", [red, red2]).style_vendi == pytest.approx(1.0)
    assert diversity_report("colours", [red, blue]).style_vendi == pytest.approx(2.0)


def _renders(seeds: list[int]) -> list[Image.Image]:
    from tools.demo.world import render, sample_scene

    return [Image.fromarray(render(sample_scene(s, "any", n_shapes=1), 32).image) for s in seeds]


def test_sets_of_known_diversity_come_out_in_order() -> None:
    """8 copies < 4 scenes twice each < 8 different scenes, for content and style alike."""
    copies = _renders([3] * 8)
    pairs = _renders([3, 4, 5, 6] * 2)
    different = _renders(list(range(3, 11)))
    clip = ClipEmbedder(DEMO_CLIP)
    reports = [diversity_report("a shape", images, clip) for images in (copies, pairs, different)]
    for figure in ("semantic_vendi", "style_vendi"):
        values = [getattr(r, figure) for r in reports]
        assert values[0] == pytest.approx(1.0, abs=1e-3), figure
        assert values[0] < values[1] < values[2], (figure, values)
    assert reports[1].semantic is not None and reports[1].semantic.vendi <= 4.0 + 1e-6
    assert len(reports[0].near_duplicates) == 28  # every pair of 8 copies
    assert {(0, 4), (1, 5), (2, 6), (3, 7)} <= set(reports[1].near_duplicates)
    assert reports[2].near_duplicates == ()


def test_report_fields_and_serialisation() -> None:
    images = _renders([1, 2, 3])
    clip = ClipEmbedder(DEMO_CLIP)
    report = diversity_report("a red circle", images, encoders=Encoders(clip=clip, style=StyleEncoder(DEMO_CLIP)))
    assert len(report.clip_scores) == 3 and report.fidelity == pytest.approx(np.mean(report.clip_scores))
    assert report.style_encoder is not None and report.semantic is not None
    data = report.to_dict()
    assert data["images"] == 3 and data["semantic"]["vendi"] == pytest.approx(report.semantic.vendi, abs=1e-4)
    assert set(data["semantic"]) == {"vendi", "vendi_per_image", "vendi_infinity", "mean_distance"}
    summary = report_text(report)
    assert "distinct of 3" in summary and "verdict:" in summary
    with pytest.raises(ValueError, match="at least two"):
        diversity_report("one", images[:1])


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_encoders_in_half_precision_stay_within_tolerance_of_float32(dtype: str) -> None:
    """``worker.helper_models = "half"`` on a GPU, run on the CPU with the dtype given directly:
    the weights really are half precision, the embeddings come back float32 and each is within
    cosine 0.99 of float32's; the figures built on them barely move."""
    import torch

    from gouache.generation.diversity.scorer import ImageEncoder, vision_tower

    half = getattr(torch, dtype)
    images = _renders([1, 2, 3, 4])
    full_clip, half_clip = ClipEmbedder(DEMO_CLIP), ClipEmbedder(DEMO_CLIP, dtype=half)
    assert {p.dtype for p in half_clip.model.parameters()} == {half}
    assert {p.dtype for p in full_clip.model.parameters()} == {torch.float32}
    (text, embeds), (text16, embeds16) = (c.embed("a red circle", images) for c in (full_clip, half_clip))
    assert text16.dtype == embeds16.dtype == np.float32
    assert _cosines(text, text16) > 0.99 and (_cosines(embeds, embeds16) > 0.99).all()
    assert np.abs(half_clip.scores("a red circle", images) - full_clip.scores("a red circle", images)).max() < 1.0
    for encoder in (ImageEncoder, StyleEncoder):
        full, low = encoder(DEMO_CLIP).embed(images), encoder(DEMO_CLIP, dtype=half).embed(images)
        assert low.dtype == np.float32 and (_cosines(full, low) > 0.99).all(), encoder.__name__
    assert {p.dtype for p in vision_tower(DEMO_CLIP, "cpu", half)[0].parameters()} == {half}
    reports = [
        diversity_report("a shape", images, encoders=Encoders(clip=c, style=StyleEncoder(DEMO_CLIP, dtype=t)))
        for c, t in ((full_clip, None), (half_clip, half))
    ]
    assert reports[1].semantic_vendi == pytest.approx(reports[0].semantic_vendi, abs=0.05)

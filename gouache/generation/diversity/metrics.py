"""Diversity figures of one set of images, from their definitions.

A similarity kernel ``K`` (``K_ii = 1``, positive semi-definite) over ``n`` images gives:

- **Vendi score of order 1** (Friedman & Dieng, 2023): ``exp(-sum_i l_i log l_i)`` over the
  eigenvalues ``l`` of ``K / n``: the effective number of distinct images, 1 when all are alike,
  ``n`` when all differ. It grows with ``n``, so compare at equal ``n`` (``VS / n`` is given too).
- **VS-infinity**: ``1 / max l``, the most pessimistic order (it only sees the biggest cluster).
- **Mean pairwise cosine distance**: ``1 - mean_{i<j} K_ij``.
- **Near-duplicate pairs**: ``(i, j)`` whose similarity is at least a stated threshold.

Kernels here: cosine similarity of embeddings (semantic, or Gram-style features) and the
Bhattacharyya coefficient of colour histograms, which is the cosine of their square roots, so
it needs no weights and is PSD by construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = [
    "vendi",
    "vendi_infinity",
    "cosine_kernel",
    "colour_histograms",
    "histogram_roots",
    "gram_features",
    "KernelFigures",
    "kernel_figures",
    "near_duplicates",
    "cluster_order",
]


def _eigenvalues(kernel: np.ndarray) -> np.ndarray:
    n = kernel.shape[0]
    lam = np.clip(np.linalg.eigvalsh((kernel + kernel.T) / (2 * n)), 0.0, None)
    lam = lam[lam > 1e-12]
    return lam / lam.sum()


def vendi(kernel: np.ndarray, q: float = 1.0) -> float:
    """Vendi score of order ``q`` of a similarity matrix with a unit diagonal (``eigvalsh``)."""
    if kernel.shape[0] == 0:
        return 0.0
    lam = _eigenvalues(kernel)
    if q == 1.0:
        return float(np.exp(-(lam * np.log(lam)).sum()))
    if np.isinf(q):
        return float(1.0 / lam.max())
    return float(np.exp(np.log((lam**q).sum()) / (1.0 - q)))


def vendi_infinity(kernel: np.ndarray) -> float:
    """VS-infinity: one over the largest eigenvalue of ``K / n``."""
    return vendi(kernel, float("inf"))


def cosine_kernel(embeddings: np.ndarray) -> np.ndarray:
    """Cosine similarities of the rows of ``embeddings``."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True).clip(1e-12)
    kernel = unit @ unit.T
    np.fill_diagonal(kernel, 1.0)
    return kernel


def colour_histograms(images: Sequence[Image.Image], bins: int = 8) -> np.ndarray:
    """Normalised ``bins**3`` RGB histograms, one row per image."""
    rows = []
    for image in images:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int64) * bins // 256
        index = (pixels[..., 0] * bins + pixels[..., 1]) * bins + pixels[..., 2]
        counts = np.bincount(index.ravel(), minlength=bins**3).astype(np.float64)
        rows.append(counts / counts.sum())
    return np.stack(rows)


def histogram_roots(images: Sequence[Image.Image], bins: int = 8) -> np.ndarray:
    """Square-root colour histograms: unit vectors whose dot products are Bhattacharyya
    coefficients, so ``cosine_kernel`` of them is the weight-free style kernel."""
    return np.sqrt(colour_histograms(images, bins))


def gram_features(tokens: np.ndarray) -> np.ndarray:
    """Style features from one layer's patch tokens ``[n, tokens, d]``: the upper triangle of
    each image's Gram matrix of channel correlations (Gatys et al.; CSD-style style descriptors),
    which forgets where things are and keeps textures and palettes."""
    centred = tokens - tokens.mean(axis=1, keepdims=True)
    gram = np.einsum("ntd,nte->nde", centred, centred) / tokens.shape[1]
    upper = np.triu_indices(gram.shape[1])
    return gram[:, upper[0], upper[1]]


def near_duplicates(kernel: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """Pairs ``(i, j, similarity)`` with ``i < j`` and similarity at least ``threshold``."""
    n = kernel.shape[0]
    return [
        (i, j, float(kernel[i, j]))
        for i in range(n)
        for j in range(i + 1, n)
        if kernel[i, j] >= threshold
    ]


@dataclass(frozen=True)
class KernelFigures:
    """Every figure of one kernel over ``n`` images."""

    n: int
    vendi: float
    vendi_infinity: float
    mean_distance: float

    @property
    def vendi_per_image(self) -> float:
        return self.vendi / self.n

    def to_dict(self) -> dict[str, float]:
        return {
            "vendi": round(self.vendi, 4),
            "vendi_per_image": round(self.vendi_per_image, 4),
            "vendi_infinity": round(self.vendi_infinity, 4),
            "mean_distance": round(self.mean_distance, 4),
        }


def kernel_figures(kernel: np.ndarray) -> KernelFigures:
    """Vendi, VS-infinity and mean pairwise cosine distance of one kernel."""
    n = kernel.shape[0]
    if n < 2:
        raise ValueError("diversity figures need at least two images")
    upper = kernel[np.triu_indices(n, k=1)]
    return KernelFigures(
        n=n,
        vendi=vendi(kernel),
        vendi_infinity=vendi_infinity(kernel),
        mean_distance=float(1.0 - upper.mean()),
    )


def cluster_order(distance: np.ndarray) -> list[int]:
    """A leaf order of average-linkage agglomerative clustering: similar images end up next to
    each other, so a heatmap in this order shows clusters as blocks on the diagonal."""
    n = distance.shape[0]
    clusters: dict[int, list[int]] = {i: [i] for i in range(n)}
    while len(clusters) > 1:
        keys = sorted(clusters)
        best: tuple[float, int, int] | None = None
        for a_pos, a in enumerate(keys):
            for b in keys[a_pos + 1 :]:
                d = float(distance[np.ix_(clusters[a], clusters[b])].mean())
                if best is None or d < best[0] - 1e-12:
                    best = (d, a, b)
        assert best is not None
        _, a, b = best
        clusters[a] = clusters[a] + clusters.pop(b)
    (order,) = clusters.values()
    return order

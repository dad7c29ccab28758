"""Numbers the demo benchmark reports: Vendi, FID, KID and depth-layout adherence.

Computed directly (``eigvalsh``, ``sqrtm`` via eigen-decomposition) rather than through
packages with known faults (the PyPI ``vendi-score`` ignores ``q``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["vendi", "frechet_distance", "kernel_inception_distance", "layout_iou"]


def vendi(features: np.ndarray) -> float:
    """Vendi score (order 1) of L2-normalised ``features``: exp(entropy of eig(K / n))."""
    x = features / np.linalg.norm(features, axis=1, keepdims=True).clip(1e-12)
    k = x @ x.T
    lam = np.clip(np.linalg.eigvalsh(k / len(x)), 0.0, None)
    lam = lam[lam > 1e-12]
    return float(np.exp(-(lam * np.log(lam)).sum()))


def _sqrtm_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(w.clip(0.0))) @ v.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two feature sets (Heusel et al., 2017)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = _sqrtm_psd(ca)
    cross = _sqrtm_psd(root_a @ cb @ root_a)  # tr sqrt(ca cb) = tr sqrt(ca^1/2 cb ca^1/2)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * np.trace(cross))


def kernel_inception_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel (Binkowski et al., 2018)."""
    d = a.shape[1]

    def kern(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (x @ y.T / d + 1.0) ** 3

    m, n = len(a), len(b)
    kaa, kbb, kab = kern(a, a), kern(b, b), kern(a, b)
    return float((kaa.sum() - np.trace(kaa)) / (m * (m - 1))
                 + (kbb.sum() - np.trace(kbb)) / (n * (n - 1)) - 2 * kab.mean())


def _median3(image: np.ndarray) -> np.ndarray:
    padded = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = image.shape[:2]
    stack = [padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)]
    return np.median(np.stack(stack), axis=0)


def layout_iou(image: np.ndarray, foreground: np.ndarray) -> float:
    """How well ``image``'s two-colour split matches the ``foreground`` mask of a depth map.

    After a 3x3 median filter (dots, stripes and noise in the background are texture, not
    layout), each pixel goes to whichever of the median inside-mask or median outside-mask
    colours it is closer to; the IoU of the pixels assigned "inside" with the mask is high
    only when the image really has a distinct region where the depth map says the object is.
    """
    px = _median3(image.astype(np.float32)).reshape(-1, 3)
    fg = foreground.reshape(-1)
    if fg.all() or not fg.any():
        return 0.0
    inside, outside = np.median(px[fg], axis=0), np.median(px[~fg], axis=0)
    near = ((px - inside) ** 2).sum(1) < ((px - outside) ** 2).sum(1)
    return float((near & fg).sum() / max((near | fg).sum(), 1))

"""How different the images of one prompt are from each other, and how well they follow it.

Two kernels feed the Vendi score (Friedman & Dieng, 2023): a *semantic* one, cosine similarity
of CLIP image embeddings, and a *style* one, the Bhattacharyya coefficient of colour histograms
(positive semi-definite with a unit diagonal, and needing no weights). Vendi is the exponential
of the entropy of the kernel's eigenvalues: 1 when all images are alike, ``n`` when all differ.
It grows with ``n``, so the report also gives it per image. The CLIP score (cosine of image and
prompt embeddings, x100) says whether the variety stayed on the prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from gouache.generation.pretrained import LazyPretrained

__all__ = [
    "vendi_score",
    "colour_histograms",
    "style_kernel",
    "ClipEmbedder",
    "DiversityReport",
    "diversity_report",
    "DiversityScorer",
]


def vendi_score(kernel: np.ndarray, q: float = 1.0) -> float:
    """Vendi score of order ``q`` of a similarity matrix with a unit diagonal (``eigvalsh``)."""
    n = kernel.shape[0]
    if n == 0:
        return 0.0
    lam = np.clip(np.linalg.eigvalsh((kernel + kernel.T) / (2 * n)), 0.0, None)
    lam = lam[lam > 1e-12]
    lam = lam / lam.sum()
    if q == 1.0:
        return float(np.exp(-(lam * np.log(lam)).sum()))
    if np.isinf(q):
        return float(1.0 / lam.max())
    return float(np.exp(np.log((lam**q).sum()) / (1.0 - q)))


def colour_histograms(images: Sequence[Image.Image], bins: int = 8) -> np.ndarray:
    """Normalised ``bins**3`` RGB histograms, one row per image."""
    rows = []
    for image in images:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int64) * bins // 256
        index = (pixels[..., 0] * bins + pixels[..., 1]) * bins + pixels[..., 2]
        counts = np.bincount(index.ravel(), minlength=bins**3).astype(np.float64)
        rows.append(counts / counts.sum())
    return np.stack(rows)


def style_kernel(histograms: np.ndarray) -> np.ndarray:
    """Bhattacharyya coefficients: K_ij = sum_b sqrt(h_i(b) h_j(b)); K_ii = 1."""
    roots = np.sqrt(histograms)
    return roots @ roots.T


def _cosine_kernel(embeddings: np.ndarray) -> np.ndarray:
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True).clip(1e-12)
    return unit @ unit.T


class ClipEmbedder:
    """A CLIPModel loaded once from a directory (``from_pretrained``, local files only)."""

    def __init__(self, path: str, *, device: str = "cpu") -> None:
        self.path = path
        self.device = device
        self._pretrained = LazyPretrained("CLIPModel", "CLIPProcessor", path, device=device)

    def embed(self, prompt: str, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """(text embedding [d], image embeddings [n, d]) in CLIP's joint space."""
        import torch

        model, processor = self._pretrained.get()
        inputs = processor(
            text=[prompt], images=list(images), return_tensors="pt", padding="max_length",
            truncation=True,
        )  # fmt: skip
        with torch.inference_mode():
            out = model(**{k: v.to(self.device) for k, v in inputs.items()})
        return out.text_embeds[0].float().cpu().numpy(), out.image_embeds.float().cpu().numpy()


@dataclass(frozen=True)
class DiversityReport:
    images: int
    style_vendi: float
    semantic_vendi: float | None  # None when the model has no CLIP configured
    clip_scores: tuple[float, ...]  # per image, cosine x 100; empty without CLIP
    summary: str

    @property
    def style_vendi_per_image(self) -> float:
        return self.style_vendi / self.images

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["style_vendi_per_image"] = round(self.style_vendi_per_image, 4)
        if self.semantic_vendi is not None:
            data["semantic_vendi_per_image"] = round(self.semantic_vendi / self.images, 4)
        data["clip_scores"] = list(self.clip_scores)
        return data


def diversity_report(
    prompt: str, images: Sequence[Image.Image], clip: ClipEmbedder | None = None
) -> DiversityReport:
    """Score a set of images of one prompt; needs at least two images."""
    if len(images) < 2:
        raise ValueError("a diversity report needs at least two images")
    style = vendi_score(style_kernel(colour_histograms(images)))
    semantic, scores = None, ()
    if clip is not None:
        text, embeds = clip.embed(prompt, images)
        semantic = vendi_score(_cosine_kernel(embeds))
        unit = embeds / np.linalg.norm(embeds, axis=1, keepdims=True).clip(1e-12)
        scores = tuple(round(float(v) * 100, 2) for v in unit @ (text / max(np.linalg.norm(text), 1e-12)))
    n = len(images)
    parts = [f"style diversity {style:.2f} of {n} (Vendi on colour histograms)"]
    if semantic is not None:
        parts.append(f"semantic diversity {semantic:.2f} of {n} (Vendi on CLIP embeddings)")
        parts.append(f"mean CLIP score {np.mean(scores):.1f}")
    return DiversityReport(
        images=n,
        style_vendi=round(style, 4),
        semantic_vendi=None if semantic is None else round(semantic, 4),
        clip_scores=scores,
        summary="; ".join(parts),
    )


class DiversityScorer:
    """Reports for /diversity jobs, with each model's configured CLIP (loaded once)."""

    def __init__(self, registry: Any = None, *, device: str = "cpu") -> None:
        self._registry = registry  # a ModelRegistry; None scores style only
        self._device = device
        self._embedders: dict[str, ClipEmbedder] = {}

    def _clip_for(self, model: str) -> ClipEmbedder | None:
        if self._registry is None:
            return None
        path = self._registry.get(model).clip_path
        if path is None:
            return None
        if path not in self._embedders:
            self._embedders[path] = ClipEmbedder(path, device=self._device)
        return self._embedders[path]

    def report(self, model: str, prompt: str, images: Sequence[Image.Image]) -> DiversityReport:
        return diversity_report(prompt, images, self._clip_for(model))

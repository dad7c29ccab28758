"""How different the images of one prompt are from each other, and how well they follow it.

Content (semantic) diversity is the Vendi score of cosine similarities of image embeddings
from the model's configured image encoder (``ModelSpec.image_encoder``: a CLIP or DINOv2
folder; else its ``clip_model``). Style diversity is always measured on square-root colour
histograms (weight-free), and also on Gram features of a configured ``style_encoder``.
Fidelity is the CLIP score (cosine of image and prompt embeddings, x100) where a CLIP model is
configured. The figures themselves live in ``diversity_metrics``; the text and picture a person
reads in ``diversity_report``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from gouache.generation.diversity.metrics import (
    KernelFigures,
    colour_histograms,
    cosine_kernel,
    gram_features,
    histogram_roots,
    kernel_figures,
    near_duplicates,
    vendi,
)
from gouache.generation.pretrained import LazyPretrained, model_inputs

if TYPE_CHECKING:
    import torch

__all__ = [
    "vendi_score",
    "colour_histograms",
    "style_kernel",
    "ClipEmbedder",
    "ImageEncoder",
    "StyleEncoder",
    "Encoders",
    "DiversityReport",
    "diversity_report",
    "DiversityScorer",
    "NEAR_DUPLICATE",
    "vision_tower",
]

NEAR_DUPLICATE = 0.95  # pairs at least this similar in content *and* colour are near-duplicates

vendi_score = vendi  # the name older callers use


def style_kernel(histograms: np.ndarray) -> np.ndarray:
    """Bhattacharyya coefficients: K_ij = sum_b sqrt(h_i(b) h_j(b)); K_ii = 1."""
    roots = np.sqrt(histograms)
    return roots @ roots.T


class ClipEmbedder:
    """A CLIPModel loaded once from a directory (``from_pretrained``, local files only), on
    ``device`` in ``dtype`` (float32 when None); embeddings come back in float32."""

    def __init__(self, path: str, *, device: str = "cpu", dtype: torch.dtype | None = None) -> None:
        self.path = path
        self.device = device
        self._pretrained = LazyPretrained("CLIPModel", "CLIPProcessor", path, device=device, dtype=dtype)

    @property
    def model(self) -> Any:
        """The loaded CLIPModel (loads it)."""
        return self._pretrained.get()[0]

    def embed(self, prompt: str, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """(text embedding [d], image embeddings [n, d]) in CLIP's joint space."""
        text, embeds = self.embed_prompts([prompt], images)
        return text[0], embeds

    def embed_prompts(
        self, prompts: Sequence[str], images: Sequence[Image.Image]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(text embeddings [p, d], image embeddings [n, d])."""
        import torch

        model, processor = self._pretrained.get()
        inputs = processor(
            text=list(prompts), images=list(images), return_tensors="pt", padding="max_length",
            truncation=True,
        )  # fmt: skip
        from gouache.generation.loop.device import guarded

        def run() -> Any:
            with torch.inference_mode():
                return model(**model_inputs(inputs, self.device, model.dtype))

        out = guarded(run, what="the CLIP scores")
        return out.text_embeds.float().cpu().numpy(), out.image_embeds.float().cpu().numpy()

    def scores(self, prompt: str, images: Sequence[Image.Image]) -> np.ndarray:
        """CLIP score of each image against ``prompt`` (cosine x 100)."""
        text, embeds = self.embed(prompt, images)
        return cosine_kernel(np.vstack([text[None], embeds]))[0, 1:] * 100


def vision_tower(path: str, device: str, dtype: torch.dtype | None = None) -> tuple[Any, Any]:
    """(CLIP or DINOv2-style model on ``device`` in ``dtype``, its image processor), loaded once
    per (path, device, dtype)."""
    import torch
    import transformers

    dtype = dtype or torch.float32
    key = (path, device, dtype)
    with _VISION_LOCK:
        if key not in _VISION_CACHE:
            config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
            cls = transformers.CLIPModel if config.model_type == "clip" else transformers.AutoModel
            model = cls.from_pretrained(path, local_files_only=True).to(device=device, dtype=dtype).eval()
            processor = transformers.AutoImageProcessor.from_pretrained(path, local_files_only=True)
            _VISION_CACHE[key] = (model, processor)
        return _VISION_CACHE[key]


def _vision_tokens(
    path: str, device: str, images: Sequence[Image.Image], layer: str, dtype: torch.dtype | None = None
) -> Any:
    """Hidden states of a CLIP or DINOv2-style vision tower (AutoModel + AutoImageProcessor)."""
    import torch
    import transformers

    model, processor = vision_tower(path, device, dtype)
    pixels = processor(images=list(images), return_tensors="pt")["pixel_values"].to(device, model.dtype)
    from gouache.generation.loop.device import guarded

    @torch.inference_mode()
    def run() -> Any:
        if isinstance(model, transformers.CLIPModel):
            if layer == "pooled":  # transformers 5 returns the projection as pooler_output
                features = model.get_image_features(pixel_values=pixels)
                return getattr(features, "pooler_output", features)
            return model.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states
        out = model(pixel_values=pixels, output_hidden_states=True)
        return out.pooler_output if layer == "pooled" else out.hidden_states

    return guarded(run, what="the diversity report")


_VISION_CACHE: dict[tuple[str, str, Any], tuple[Any, Any]] = {}
_VISION_LOCK = threading.Lock()


class ImageEncoder:
    """Semantic image embeddings: CLIP's image features or DINOv2's pooled CLS token."""

    def __init__(self, path: str, *, device: str = "cpu", dtype: torch.dtype | None = None) -> None:
        self.path, self.device, self.dtype = path, device, dtype

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        out = _vision_tokens(self.path, self.device, images, "pooled", self.dtype)
        return np.asarray(out.float().cpu().numpy())


class StyleEncoder:
    """Style features: the Gram matrix of a middle layer's patch tokens of a vision tower."""

    def __init__(self, path: str, *, device: str = "cpu", dtype: torch.dtype | None = None) -> None:
        self.path, self.device, self.dtype = path, device, dtype

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        hidden = _vision_tokens(self.path, self.device, images, "hidden", self.dtype)
        tokens = hidden[len(hidden) // 2][:, 1:].float().cpu().numpy()  # drop CLS
        return gram_features(tokens)


@dataclass(frozen=True)
class Encoders:
    """The embedding models configured for one generative model (any may be absent)."""

    clip: ClipEmbedder | None = None
    image: ImageEncoder | None = None  # semantic; CLIP's image tower when None
    style: StyleEncoder | None = None


@dataclass(frozen=True)
class DiversityReport:
    """Every figure of one set; ``kernels`` (not serialised) feed the composite picture."""

    images: int
    style: KernelFigures  # colour histograms, always
    semantic: KernelFigures | None = None
    style_encoder: KernelFigures | None = None
    clip_scores: tuple[float, ...] = ()  # per image, cosine x 100; empty without CLIP
    near_duplicates: tuple[tuple[int, int], ...] = ()
    prompt: str = ""
    kernels: dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    @property
    def style_vendi(self) -> float:
        return self.style.vendi

    @property
    def semantic_vendi(self) -> float | None:
        return None if self.semantic is None else self.semantic.vendi

    @property
    def style_vendi_per_image(self) -> float:
        return self.style.vendi_per_image

    @property
    def fidelity(self) -> float | None:
        return float(np.mean(self.clip_scores)) if self.clip_scores else None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "images": self.images,
            "prompt": self.prompt,
            "style_vendi": round(self.style.vendi, 4),
            "style_vendi_per_image": round(self.style.vendi_per_image, 4),
            "style": self.style.to_dict(),
            "semantic_vendi": None,
            "clip_scores": list(self.clip_scores),
            "fidelity": None if self.fidelity is None else round(self.fidelity, 2),
            "near_duplicates": [list(pair) for pair in self.near_duplicates],
            "near_duplicate_similarity": NEAR_DUPLICATE,
        }
        if self.semantic is not None:
            data["semantic_vendi"] = round(self.semantic.vendi, 4)
            data["semantic_vendi_per_image"] = round(self.semantic.vendi_per_image, 4)
            data["semantic"] = self.semantic.to_dict()
        if self.style_encoder is not None:
            data["style_encoder"] = self.style_encoder.to_dict()
        return data


def diversity_report(
    prompt: str,
    images: Sequence[Image.Image],
    clip: ClipEmbedder | None = None,
    *,
    encoders: Encoders | None = None,
    near: float = NEAR_DUPLICATE,
) -> DiversityReport:
    """Score a set of images of one prompt; needs at least two images."""
    if len(images) < 2:
        raise ValueError("a diversity report needs at least two images")
    enc = encoders or Encoders(clip=clip)
    kernels = {"style": cosine_kernel(histogram_roots(images))}
    scores: tuple[float, ...] = ()
    if enc.clip is not None:
        text, embeds = enc.clip.embed(prompt, images)
        scores = tuple(round(float(v), 2) for v in cosine_kernel(np.vstack([text[None], embeds]))[0, 1:] * 100)
        kernels["semantic"] = cosine_kernel(embeds)
    if enc.image is not None:
        kernels["semantic"] = cosine_kernel(enc.image.embed(images))
    if enc.style is not None:
        kernels["style_encoder"] = cosine_kernel(enc.style.embed(images))
    # A near-duplicate looks the same in content and in colour.
    joint = np.minimum(kernels["style"], kernels.get("semantic", kernels["style"]))
    return DiversityReport(
        images=len(images),
        style=kernel_figures(kernels["style"]),
        semantic=kernel_figures(kernels["semantic"]) if "semantic" in kernels else None,
        style_encoder=kernel_figures(kernels["style_encoder"]) if "style_encoder" in kernels else None,
        clip_scores=scores,
        near_duplicates=tuple((i, j) for i, j, _ in near_duplicates(joint, near)),
        prompt=prompt,
        kernels=kernels,
    )


class DiversityScorer:
    """Reports for /diversity jobs, with each model's configured encoders (loaded once)."""

    def __init__(self, registry: Any = None, *, device: str = "cpu", dtype: torch.dtype | None = None) -> None:
        self._registry = registry  # a ModelRegistry; None scores colour only
        self._device = device
        self._dtype = dtype  # of the encoders (``worker.helper_models``); None: float32
        self._encoders: dict[str, Encoders] = {}

    @property
    def placement(self) -> tuple[str, torch.dtype | None]:
        """(device, dtype) the encoders load with (dtype None: float32)."""
        return self._device, self._dtype

    def encoders_for(self, model: str) -> Encoders:
        if self._registry is None:
            return Encoders()
        if model not in self._encoders:
            loaded = self._registry.get(model)
            clip, image, style = (getattr(loaded, f"{k}_path", None) for k in ("clip", "image_encoder", "style_encoder"))
            d, t = self._device, self._dtype
            self._encoders[model] = Encoders(
                clip=ClipEmbedder(clip, device=d, dtype=t) if clip else None,
                image=ImageEncoder(image, device=d, dtype=t) if image else None,
                style=StyleEncoder(style, device=d, dtype=t) if style else None,
            )
        return self._encoders[model]

    def known_for(self, model: str) -> Any:
        """Whether the model's tokenizer knows a phrase (for prompt variants); None: all known."""
        if self._registry is None:
            return None
        return known_by(self._registry.get(model).tokenizers[0])

    def report(self, model: str, prompt: str, images: Sequence[Image.Image]) -> DiversityReport:
        return diversity_report(prompt, images, encoders=self.encoders_for(model))


def known_by(tokenizer: Any) -> Callable[[str], bool]:
    """Whether ``tokenizer`` knows every word of a phrase: no unknown token, and, for a small
    closed vocabulary (the demo model's: one token per word), each word one whole token. A
    variant in words the model never saw would only add noise."""
    unk = getattr(tokenizer, "unk_token_id", None)
    closed = len(tokenizer) < 10_000

    def known(phrase: str) -> bool:
        for word in phrase.split():
            ids = tokenizer(word, add_special_tokens=False).input_ids
            if unk in ids or (closed and len(ids) != 1):
                return False
        return True

    return known

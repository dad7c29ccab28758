"""An optional image safety classifier, configured like any other model.

Any transformers image-classification checkpoint works (loaded with ``from_pretrained``, local
files only when offline). An image is flagged when the probabilities of the flagged labels add
up to the threshold. It runs in the worker, beside the GPU, never in the bot process; its
verdicts travel with the job as a ``moderation`` artifact that delivery reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from gouache.generation.pretrained import LazyPretrained, model_inputs

if TYPE_CHECKING:
    import torch

__all__ = ["SafetyClassifier"]


class SafetyClassifier:
    """Flags images whose flagged-label probability reaches ``threshold``; the classifier runs
    on ``device`` in ``dtype`` (float32 when None), its probabilities are float32."""

    def __init__(
        self,
        path: str,
        *,
        threshold: float = 0.5,
        flagged_labels: Iterable[str] = ("nsfw",),
        device: str = "cpu",
        dtype: torch.dtype | None = None,
        offline: bool = True,
    ) -> None:
        self.path = path
        self.threshold = threshold
        self.flagged_labels = {label.lower() for label in flagged_labels}
        self.device = device
        self.dtype = dtype  # None: float32
        self._pretrained = LazyPretrained(
            "AutoModelForImageClassification", "AutoImageProcessor", path, device=device,
            dtype=dtype, offline=offline,
        )  # fmt: skip

    def _load(self) -> tuple[Any, Any]:
        model, processor = self._pretrained.get()
        labels = {str(v).lower() for v in model.config.id2label.values()}
        if not labels & self.flagged_labels:
            raise ValueError(
                f"safety classifier {self.path} has labels {sorted(labels)}, none of "
                f"which is flagged ({sorted(self.flagged_labels)})"
            )
        return model, processor

    def warm_up(self) -> None:
        self._load()

    @property
    def model(self) -> Any:
        """The loaded classifier (loads it)."""
        return self._load()[0]

    def logits(self, images: Sequence[Image.Image]) -> np.ndarray:
        """The classifier's logits, [images, labels], in float32."""
        import torch

        from gouache.generation.loop.device import guarded

        model, processor = self._load()
        inputs = processor(images=[im.convert("RGB") for im in images], return_tensors="pt")

        def classify() -> Any:
            with torch.inference_mode():
                return model(**model_inputs(inputs, self.device, model.dtype)).logits

        return np.asarray(guarded(classify, what="the safety check").float().cpu().numpy())

    def flags(self, images: Sequence[Image.Image]) -> list[bool]:
        """One verdict per image: True means do not show it as-is."""
        if not images:
            return []
        logits = self.logits(images).astype(np.float64)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        columns = [
            int(i) for i, label in self.model.config.id2label.items() if str(label).lower() in self.flagged_labels
        ]
        return [bool(row[columns].sum() >= self.threshold) for row in probs]

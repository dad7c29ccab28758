"""An optional image safety classifier, configured like any other model.

Any transformers image-classification checkpoint works (loaded with ``from_pretrained``, local
files only when offline). An image is flagged when the probabilities of the flagged labels add
up to the threshold. It runs in the worker, beside the GPU, never in the bot process; its
verdicts travel with the job as a ``moderation`` artifact that delivery reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from PIL import Image

from gouache.generation.pretrained import LazyPretrained

__all__ = ["SafetyClassifier"]


class SafetyClassifier:
    """Flags images whose flagged-label probability reaches ``threshold``."""

    def __init__(
        self,
        path: str,
        *,
        threshold: float = 0.5,
        flagged_labels: Iterable[str] = ("nsfw",),
        device: str = "cpu",
        offline: bool = True,
    ) -> None:
        self.path = path
        self.threshold = threshold
        self.flagged_labels = {label.lower() for label in flagged_labels}
        self.device = device
        self._pretrained = LazyPretrained(
            "AutoModelForImageClassification", "AutoImageProcessor", path, device=device,
            offline=offline,
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

    def flags(self, images: Sequence[Image.Image]) -> list[bool]:
        """One verdict per image: True means do not show it as-is."""
        if not images:
            return []
        import torch

        from gouache.generation.loop.device import guarded

        model, processor = self._load()
        inputs = processor(images=[im.convert("RGB") for im in images], return_tensors="pt")

        def classify() -> Any:
            with torch.inference_mode():
                return model(**{k: v.to(self.device, _float_dtype(model, v)) for k, v in inputs.items()}).logits

        logits = guarded(classify, what="the safety check")
        probs = logits.float().softmax(-1).cpu()
        columns = [
            i for i, label in model.config.id2label.items() if str(label).lower() in self.flagged_labels
        ]
        return [bool(row[columns].sum() >= self.threshold) for row in probs]


def _float_dtype(model: Any, value: Any) -> Any:
    """Pixel inputs in the model's dtype (a half-precision classifier), integers as they are."""
    return model.dtype if value.is_floating_point() else value.dtype

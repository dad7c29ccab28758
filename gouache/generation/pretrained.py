"""A transformers model and its processor, loaded from a path once, on first use.

The diversity scorer's CLIP and the safety classifier are optional helpers of a model: loading
them lazily keeps worker start-up cheap, and the lock keeps two threads from loading twice.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["LazyPretrained"]


class LazyPretrained:
    """``model_class`` + ``processor_class`` (names in ``transformers``) from ``path``."""

    def __init__(
        self,
        model_class: str,
        processor_class: str,
        path: str,
        *,
        device: str = "cpu",
        offline: bool = True,
    ) -> None:
        self.path = path
        self.device = device
        self._classes = (model_class, processor_class)
        self._offline = offline
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Any] | None = None

    def get(self) -> tuple[Any, Any]:
        """(model in eval mode on ``device``, processor)."""
        with self._lock:
            if self._loaded is None:
                import transformers

                model_class, processor_class = (getattr(transformers, c) for c in self._classes)
                kwargs = {"local_files_only": self._offline}
                processor = processor_class.from_pretrained(self.path, **kwargs)
                model = model_class.from_pretrained(self.path, **kwargs)
                self._loaded = (model.to(self.device).eval(), processor)
        return self._loaded

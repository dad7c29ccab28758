"""The worker's helper models: where they run, in what precision, and loading them once.

The diversity scorer's CLIP and image encoders, the safety classifier and the depth estimators
are helpers of the image models. ``helper_placement`` maps the ``worker.helper_models`` setting
and the worker's device to the (device, dtype) each helper is loaded with; ``model_inputs``
moves a processor's tensors there (float inputs such as ``pixel_values`` in the model's dtype);
``LazyPretrained`` loads a transformers model and its processor on first use: lazily keeps
worker start-up cheap, and the lock keeps two threads from loading twice. Every helper hands
back float32 results whatever it runs in.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["HELPER_MODES", "LazyPretrained", "helper_placement", "model_inputs", "resolve_device"]

HELPER_MODES = ("half", "full", "cpu")


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` is CUDA when usable, else the CPU; anything else as torch reads it."""
    import torch

    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def helper_placement(mode: str, device: str | torch.device) -> tuple[torch.device, torch.dtype]:
    """(device, dtype) of the helper models for ``worker.helper_models`` = ``mode`` on a worker
    whose device is ``device``: ``half`` = that device, float16 on an accelerator and float32
    on the CPU (half precision is slow there); ``full`` = that device in float32; ``cpu`` = the
    CPU in float32, whatever the worker's device."""
    import torch

    if mode not in HELPER_MODES:
        raise ValueError(f"unknown helper_models {mode!r}: choose half, full or cpu")
    if mode == "cpu":
        return torch.device("cpu"), torch.float32
    where = resolve_device(device)
    if mode == "half" and where.type != "cpu":
        return where, torch.float16
    return where, torch.float32


def model_inputs(inputs: Mapping[str, Any], device: str | torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """A processor's tensors on ``device``: floating ones (``pixel_values``) in ``dtype``,
    integer ones (token ids, masks) as they are."""
    return {k: v.to(device, dtype if v.is_floating_point() else v.dtype) for k, v in inputs.items()}


class LazyPretrained:
    """``model_class`` + ``processor_class`` (names in ``transformers``) from ``path``."""

    def __init__(
        self,
        model_class: str,
        processor_class: str,
        path: str,
        *,
        device: str = "cpu",
        dtype: torch.dtype | None = None,
        offline: bool = True,
    ) -> None:
        self.path = path
        self.device = device
        self.dtype = dtype  # None: float32
        self._classes = (model_class, processor_class)
        self._offline = offline
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Any] | None = None

    def get(self) -> tuple[Any, Any]:
        """(model in eval mode on ``device`` in ``dtype``, processor)."""
        with self._lock:
            if self._loaded is None:
                import torch
                import transformers

                model_class, processor_class = (getattr(transformers, c) for c in self._classes)
                kwargs = {"local_files_only": self._offline}
                processor = processor_class.from_pretrained(self.path, **kwargs)
                model = model_class.from_pretrained(self.path, **kwargs)
                model = model.to(device=self.device, dtype=self.dtype or torch.float32)
                self._loaded = (model.eval(), processor)
        return self._loaded

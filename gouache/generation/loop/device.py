"""What the engine and the running batch share about the device: callbacks, faults, memory.

Kept apart from ``engine.py`` and ``running.py`` so that neither imports the other.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch

__all__ = [
    "FatalDeviceError",
    "Fault",
    "OnStep",
    "ShouldStop",
    "free_device_memory",
    "sticky_device_errors",
]

OnStep = Callable[[int, int], None]  # (steps done, total steps)
ShouldStop = Callable[[str], bool]  # item_id -> drop it now
Fault = Callable[[str, Sequence[str]], None]  # (stage, item ids in the batch): a test seam

_STICKY_MARKERS = ("illegal memory access", "device-side assert", "CUDA error: an illegal")


class FatalDeviceError(RuntimeError):
    """The device is in an unrecoverable state (a sticky CUDA error): the worker must exit."""


@contextmanager
def sticky_device_errors() -> Iterator[None]:
    """Turn a sticky CUDA error into ``FatalDeviceError``: the process must restart."""
    try:
        yield
    except RuntimeError as exc:
        if any(marker in str(exc) for marker in _STICKY_MARKERS):
            raise FatalDeviceError(f"sticky device error, the worker must restart: {exc}") from exc
        raise


def free_device_memory() -> None:
    """After an out-of-memory error: drop garbage and the CUDA cache before retrying smaller."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

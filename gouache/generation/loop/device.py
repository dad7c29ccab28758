"""What the engine and the running batch share about the device: callbacks, faults, memory.

Kept apart from ``engine.py`` and ``running.py`` so that neither imports the other. Two
predicates decide what a failed GPU call means everywhere it is made (the denoiser, the text
encoders, every decode, ``--process``, safety, CLIP, the depth estimators, model loading):

- ``is_out_of_memory``: ``torch.OutOfMemoryError``, and the allocation failures cuBLAS and
  cuDNN report as plain ``RuntimeError`` (``CUBLAS_STATUS_ALLOC_FAILED``,
  ``CUDNN_STATUS_ALLOC_FAILED``/``NOT_ENOUGH_WORKSPACE``...): retried smaller or failed alone.
- ``is_sticky``: ``torch.AcceleratorError`` (the CUDA context is poisoned: every later call
  fails) and, for builds that raise a plain ``RuntimeError``, the CUDA error strings of the
  sticky error classes: the process must restart (``FatalDeviceError``).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

import torch

from gouache import messages
from gouache.errors import ResourceExhausted

T = TypeVar("T")

__all__ = [
    "FatalDeviceError",
    "Fault",
    "OnStep",
    "ShouldStop",
    "free_device_memory",
    "guarded",
    "is_out_of_memory",
    "is_sticky",
    "raise_if_sticky",
    "sticky_device_errors",
]

OnStep = Callable[[int, int], None]  # (steps done, total steps)
ShouldStop = Callable[[str], bool]  # item_id -> drop it now
Fault = Callable[[str, Sequence[str]], None]  # (stage, item ids in the batch): a test seam

_STICKY_MARKERS = (
    "illegal memory access",
    "device-side assert",
    "CUDA error: an illegal",  # an illegal instruction / address
    "unspecified launch failure",
    "misaligned address",
    "uncorrectable ECC error",
    "CUDA error: the launch timed out",
    "hardware stack error",
    "CUDA error: unknown error",
)
_OOM_MARKERS = (
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_NOT_ENOUGH_WORKSPACE",
    "CUDNN_STATUS_MAPPING_ERROR",
    "CUDA error: out of memory",
    "cudaErrorMemoryAllocation",
)
_ACCELERATOR_ERROR: type[BaseException] | None = getattr(torch, "AcceleratorError", None)


class FatalDeviceError(RuntimeError):
    """The device is in an unrecoverable state (a sticky CUDA error): the worker must exit."""


def is_out_of_memory(exc: BaseException) -> bool:
    """Out of device memory, whoever reported it (the caching allocator, cuBLAS, cuDNN)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in _OOM_MARKERS)


def is_sticky(exc: BaseException) -> bool:
    """A device error after which the CUDA context is unusable (never an out-of-memory)."""
    if isinstance(exc, FatalDeviceError):
        return True
    if is_out_of_memory(exc):
        return False
    if _ACCELERATOR_ERROR is not None and isinstance(exc, _ACCELERATOR_ERROR):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in _STICKY_MARKERS)


def raise_if_sticky(exc: BaseException) -> None:
    """Re-raise a sticky device error as ``FatalDeviceError``; anything else returns."""
    if isinstance(exc, FatalDeviceError):
        raise exc
    if is_sticky(exc):
        raise FatalDeviceError(f"sticky device error, the worker must restart: {exc}") from exc


@contextmanager
def sticky_device_errors() -> Iterator[None]:
    """Turn a sticky CUDA error into ``FatalDeviceError``: the process must restart."""
    try:
        yield
    except Exception as exc:
        raise_if_sticky(exc)
        raise


def free_device_memory() -> None:
    """After an out-of-memory error: drop garbage and the CUDA cache before retrying smaller."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def guarded(call: Callable[[], T], *, what: str) -> T:
    """One GPU call outside the denoising loop (safety, CLIP, depth estimators, ``--process``).

    Out of memory: the cache is freed and the call retried once, then ``ResourceExhausted``
    naming ``what`` fails that job alone. A sticky device error is ``FatalDeviceError``.
    """
    for _attempt in (1, 2):
        try:
            return call()
        except Exception as exc:
            raise_if_sticky(exc)
            if not is_out_of_memory(exc):
                raise
            free_device_memory()
    raise ResourceExhausted(messages.out_of_memory_in(what))

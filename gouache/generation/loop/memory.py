"""Memory that fits the card: row budget and decode chunk from free memory and the model's size.

A pure function, so the arithmetic is tested with made-up cards (tests/unit/generation/
test_memory.py); the worker calls it with ``torch.cuda.mem_get_info()`` on CUDA and leaves the
configured values alone elsewhere. The per-row and per-decode costs are estimates that scale
with the latent area (activations of one UNet row, one VAE decode in the model's dtype), with
a safety factor; what a batch then learns by shrinking after an out-of-memory is remembered per
shape by the engine, so the estimate only has to be a good first guess.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MemoryPlan", "plan_memory"]

_ROW_BYTES_PER_LATENT = 160 * 1024  # one UNet row's activations per latent pixel (fp16, SDPA)
_DECODE_BYTES_PER_PIXEL = 3 * 1024  # one VAE decode's activations per output pixel (fp16)
_RESERVE = 1 << 30  # allocator fragmentation, cuBLAS workspaces, the CUDA context


@dataclass(frozen=True)
class MemoryPlan:
    row_budget: int
    decode_chunk: int


def plan_memory(
    free_bytes: int,
    model_bytes: int,
    width: int,
    height: int,
    *,
    dtype_bytes: int = 2,
    loaded: bool = True,
    most_rows: int = 64,
    most_decodes: int = 8,
) -> MemoryPlan:
    """How many UNet rows per step and images per VAE call fit in ``free_bytes``.

    ``model_bytes`` is subtracted unless the model is already ``loaded`` (then it is not part
    of what is free). At least one row and one decode: a card that cannot fit one fails that
    item alone, as any out-of-memory does.
    """
    headroom = free_bytes - _RESERVE - (0 if loaded else model_bytes)
    scale = dtype_bytes / 2
    latent = (width // 8) * (height // 8)
    row = max(1, int(_ROW_BYTES_PER_LATENT * latent * scale))
    decode = max(1, int(_DECODE_BYTES_PER_PIXEL * width * height * scale))
    rows = max(1, min(most_rows, headroom // row)) if headroom > 0 else 1
    decodes = max(1, min(most_decodes, headroom // decode)) if headroom > 0 else 1
    return MemoryPlan(int(rows), int(decodes))

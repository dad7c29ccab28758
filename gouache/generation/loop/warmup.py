"""Compiling a model's buckets at warm-up, before the worker claims work.

With ``speed.compile = "on"`` the UNet is ``torch.compile``-d per bucket of rows
(``speed.BucketedUNet``), and each graph costs seconds to minutes the first time a batch of that
size meets it. ``compile_buckets`` pays them at start-up instead: for every bucket a running
batch of ``max_rows`` can reach, one step of a batch of that many rows at the model's default
size, through the same ``RunningBatch`` every request runs in (so the graphs are the ones the
requests will use: same keywords, dtypes, strides and latent size), once for plain rows and,
where the model has a depth ControlNet, once for rows with its residuals. No image is decoded.

A compile that fails here raises ``CompileError`` (the worker refuses to start, saying why);
one that fails later, in a request, runs the eager UNet (``BucketedUNet.failure``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from gouache import messages
from gouache.errors import CompileError
from gouache.generation.loop.batch import BatchItem, LaneSpec, ShapeKey
from gouache.generation.loop.speed import BucketedUNet

if TYPE_CHECKING:
    from gouache.generation.loop.running import RunningBatch
    from gouache.generation.models import LoadedModel

    # Engine.running_batch: a running batch for a shape, its budget capped to the card
    OpenBatch = Callable[..., RunningBatch]

__all__ = ["compile_buckets", "warm_rows"]

log = logging.getLogger(__name__)


def warm_rows(buckets: tuple[int, ...], max_rows: int) -> list[tuple[int, int]]:
    """(bucket, rows to run) for every bucket a batch of at most ``max_rows`` rows can meet: a
    bucket above ``max_rows`` is met only by counts between the one below it and ``max_rows``."""
    out, below = [], 0
    for bucket in sorted(buckets):
        if below >= max_rows:
            break
        out.append((bucket, min(bucket, max_rows)))
        below = bucket
    return out


def compile_buckets(
    open_batch: OpenBatch, model: LoadedModel, max_rows: int | None = None
) -> dict[str, float]:
    """Compile ``model``'s buckets now in batches ``open_batch`` (``Engine.running_batch``)
    opens; returns the seconds each took, by ``"<rows> rows"`` (and ``"<rows> rows, depth"``).
    Nothing to do when its UNet is not compiled."""
    unet = model.denoiser_call
    if not isinstance(unet, BucketedUNet):
        return {}
    spec = model.spec
    shape = ShapeKey(model.name, spec.default_width, spec.default_height)
    # On CUDA the engine caps the row budget by the card's free memory: no batch goes above it.
    cap = open_batch(shape, row_budget=max_rows or max(unet.buckets), decode_chunk=1).row_budget
    forms = ["txt2img"] + (["depth"] if model.controlnet is not None else [])
    seconds: dict[str, float] = {}
    for bucket, rows in warm_rows(unet.buckets, cap):
        for pipeline in forms:
            label = f"{rows} rows" + (", depth" if pipeline == "depth" else "")
            start = time.perf_counter()
            _one_step(open_batch, model, shape, rows, pipeline)
            seconds[label] = round(time.perf_counter() - start, 2)
            if unet.failure is not None:
                raise CompileError(messages.compile_failed_at_warm_up(model.name, rows, unet.failure))
            log.info("model %s: compiled bucket %d (%s) in %.1f s", model.name, bucket, label,
                     seconds[label])  # fmt: skip
    log.info("model %s: %d compiled graphs ready in %.1f s", model.name, len(seconds),
             sum(seconds.values()))  # fmt: skip
    return seconds


def _one_step(open_batch: OpenBatch, model: LoadedModel, shape: ShapeKey, rows: int, pipeline: str) -> None:
    """One denoiser call over ``rows`` rows: one item of ``rows`` images without classifier-free
    guidance (a row each), two steps of the model's default sampler so none finishes."""
    control = None
    if pipeline == "depth":
        from PIL import Image

        control = Image.new("RGB", (shape.width, shape.height), (128, 128, 128))
    batch = open_batch(shape, row_budget=rows, decode_chunk=1)
    item = BatchItem(f"warm-up-{pipeline}-{rows}", "warm up", count=rows, control_image=control)
    batch.admit(item, LaneSpec(2, model.spec.default_sampler, 1.0, "depth" if pipeline == "depth"
                               else "txt2img"), user="warm-up")  # fmt: skip
    batch.step()
    if batch.stats.denoiser_calls != 1:  # split by an out-of-memory: no batch will reach it
        log.warning("model %s: %d rows did not fit in one call at warm-up (out of memory)",
                    model.name, rows)  # fmt: skip

"""The worker's side of the experiments: sweeps run as one job of many cells, and the
``--process`` artifacts (forward-noised then denoised frames as a GIF and a labelled strip).

Shared by the worker loop and ``gouache generate``, so both produce the same files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from math import lcm
from typing import TYPE_CHECKING, Any

from gouache.config import Batching, GifSettings, Limits
from gouache.generation.loop.batch import BatchItem, ItemResult
from gouache.request import Request
from gouache.storage.jobs import Artifact, ArtifactKind
from gouache.worker.jobs import (
    EstimatorLookup,
    batch_key_for,
    frames_every,
    item_for,
    shape_of,
)

if TYPE_CHECKING:
    from PIL.Image import Image

    from gouache.generation.inputs.uploads import DepthEstimatorLike
    from gouache.generation.models import LoadedModel

__all__ = ["is_experiment", "experiment_job", "admit_interpolation", "interpolate_job", "interpolation_artifacts",
           "loaded_model", "process_artifacts", "sweep_job"]


def is_experiment(request: Request) -> bool:
    """Jobs that are many lanes of running batches of their own: sweeps and interpolations.

    (``--process`` jobs are one ordinary lane each, plus the forward-noising artifacts.)"""
    return bool(request.sweep) or bool(request.frames) or bool(request.tile)


def experiment_job(
    engine: Any,
    job_id: str,
    request: Request,
    inputs: Sequence[Artifact],
    limits: Limits,
    gif: GifSettings,
    on_step: Callable[[int, int], None] | None = None,
    should_stop: Callable[[str], bool] | None = None,
    *,
    estimators: EstimatorLookup | None = None,
    batching: Batching | None = None,
) -> tuple[ItemResult, list[Artifact]]:
    batching = batching or Batching()
    if request.frames:
        return interpolate_job(engine, job_id, request, gif, on_step, should_stop, batching=batching)
    if request.tile:
        return tiled_upscale_job(engine, job_id, request, inputs, limits, gif, on_step, should_stop)
    return sweep_job(engine, job_id, request, inputs, limits, gif, on_step, should_stop,
                     estimators=estimators, batching=batching)  # fmt: skip


def interpolate_job(
    engine: Any,
    job_id: str,
    request: Request,
    gif: GifSettings,
    on_step: Callable[[int, int], None] | None = None,
    should_stop: Callable[[str], bool] | None = None,
    *,
    batching: Batching | None = None,
) -> tuple[ItemResult, list[Artifact]]:
    """/interpolate run to the end in a running batch of its own (``gouache generate``; the
    worker admits the frames into its shared batch with ``admit_interpolation``)."""
    from gouache.generation.experiments.interpolate import interpolate

    batching = batching or Batching()
    batch = engine.running_batch(shape_of(request), row_budget=batching.max_rows,
                                 decode_chunk=batching.decode_chunk)  # fmt: skip
    frames = interpolate(
        batch, batch_key_for(request), (request.prompt, request.prompt_b), (request.seed, seed_b(request)),
        request.frames, negative_prompt=request.negative_prompt, on_step=on_step,
        should_stop=(lambda: should_stop(job_id)) if should_stop is not None else None,
    )  # fmt: skip
    result = ItemResult(job_id, images=list(frames))
    if len(frames) < request.frames:
        result.cancelled = True
        return result, []
    return result, interpolation_artifacts(job_id, request, frames, gif)


def seed_b(request: Request) -> int:
    """The second endpoint's seed: ``--seed2``, or the first endpoint's."""
    return request.seed if request.seed_b is None else request.seed_b


def admit_interpolation(batch: Any, job_id: str, request: Request, user: str) -> list[str]:
    """Admit /interpolate's frames as ``user``'s lanes of the worker's shared running batch;
    returns their item ids in frame order (``<job id>:frame-<k>``)."""
    from gouache.generation.experiments.interpolate import admit_frames

    return admit_frames(batch, batch_key_for(request), (request.prompt, request.prompt_b),
                        (request.seed, seed_b(request)), request.frames,
                        negative_prompt=request.negative_prompt, user=user, prefix=f"{job_id}:frame")  # fmt: skip


def interpolation_artifacts(job_id: str, request: Request, frames: Sequence[Image], gif: GifSettings,
                            ) -> list[Artifact]:  # fmt: skip
    """Every frame's GIF, a labelled strip and the two endpoints as ``image-0.png`` and
    ``image-<last>.png`` with their own parameters."""
    from dataclasses import replace

    from gouache.generation.experiments.grid import labelled_strip
    from gouache.generation.experiments.interpolate import weights
    from gouache.generation.gif import encode_gif
    from gouache.generation.png import encode_png, png_parameters

    last = request.frames - 1
    end_b = replace(request, prompt=request.prompt_b, seed=seed_b(request))
    labels = [f"{w:.2f}" for w in weights(request.frames)]
    title = f"{request.prompt} (seed {request.seed}) -> {request.prompt_b} (seed {end_b.seed})"
    strip = labelled_strip(list(frames), labels, title=title[:160])
    return [
        Artifact(job_id, "interpolation.gif", ArtifactKind.GIF, "image/gif",
                 encode_gif(list(frames), max_bytes=gif.max_bytes, frame_ms=gif.frame_ms, hold_ms=gif.hold_ms)),
        Artifact(job_id, "strip.png", ArtifactKind.IMAGE, "image/png", encode_png(strip)),
        Artifact(job_id, "image-0.png", ArtifactKind.IMAGE, "image/png",
                 encode_png(frames[0], png_parameters(request)), 0),
        Artifact(job_id, f"image-{last}.png", ArtifactKind.IMAGE, "image/png",
                 encode_png(frames[last], png_parameters(end_b)), last),
    ]  # fmt: skip


def tiled_upscale_job(
    engine: Any,
    job_id: str,
    request: Request,
    inputs: Sequence[Artifact],
    limits: Limits,
    gif: GifSettings,
    on_step: Callable[[int, int], None] | None = None,
    should_stop: Callable[[str], bool] | None = None,
) -> tuple[ItemResult, list[Artifact]]:
    """/upscale past the model's comfortable size: the resized image redrawn in overlapping
    tiles of at most ``request.tile``, image-to-image items of one running batch on one canvas
    (``BatchItem.region``: they denoise in step and agree where they overlap, MultiDiffusion),
    decoded each and blended back (``generation/upscale.py``)."""
    from dataclasses import replace

    from gouache.generation.loop.batch import BatchItem, Region
    from gouache.generation.upscale import blend_tiles, tile_boxes, tile_overlap
    from gouache.worker.jobs import artifacts_for, start_image

    whole = start_image(request, inputs, limits)
    cell = engine.latent_cell(request.model) if hasattr(engine, "latent_cell") else 8
    size = (request.width, request.height)  # corners on the latent grid and on multiples of 8
    boxes = tile_boxes(*size, request.tile, tile_overlap(request.tile), align=lcm(8, cell))
    items = [BatchItem(f"{job_id}:tile{n}", request.prompt, request.negative_prompt, seed=request.seed,
                       init_image=whole.crop(box), region=Region(job_id, box, size))
             for n, box in enumerate(boxes)]  # fmt: skip
    left, top, right, bottom = boxes[0]
    key = replace(batch_key_for(request), width=right - left, height=bottom - top)
    results = engine.generate(key, items, on_step=on_step,
                              should_stop=(lambda _: should_stop(job_id)) if should_stop else None)  # fmt: skip
    failed = next((r for r in results if not r.ok), None)
    if failed is not None:
        return ItemResult(job_id, error=failed.error, cancelled=failed.cancelled), []
    image = blend_tiles([r.images[0] for r in results], boxes, *size)
    result = ItemResult(job_id, images=[image])
    return result, artifacts_for(job_id, request, result, gif)


def loaded_model(engine: Any, name: str) -> LoadedModel:
    """The engine's loaded model ``name`` (``--process`` noises with its family's VAE)."""
    lookup = getattr(engine, "model", None)
    if lookup is None:
        raise RuntimeError(f"{type(engine).__name__} has no loaded models for --process")
    model: LoadedModel = lookup(name)
    return model


def sweep_job(
    engine: Any,
    job_id: str,
    request: Request,
    inputs: Sequence[Artifact],
    limits: Limits,
    gif: GifSettings,
    on_step: Callable[[int, int], None] | None = None,
    should_stop: Callable[[str], bool] | None = None,
    *,
    estimators: EstimatorLookup | None = None,
    batching: Batching | None = None,
) -> tuple[ItemResult, list[Artifact]]:
    """Every cell of ``request``'s sweep; the combined result and the grid plus cell artifacts
    (and for /depth the depth map used, once).

    The cells of one shape are lanes of one running batch (``max_rows`` rows a step). ``estimators``: /depth photos, as for any job. The combined result holds the
    cells' images in cell order (safety verdicts index them); its error is the first cell's
    error, and it is cancelled if any cell was.
    """
    from gouache.worker.sweeps import run_sweep

    batching = batching or Batching()
    once = _EstimatedOnce(estimators) if estimators is not None else None
    controls: list[Image] = []  # /depth: each cell's control image, in cell order

    def cell_item(item_id: str, cell: Request) -> BatchItem:
        item = item_for(item_id, cell, inputs, limits, gif, once)
        if item.control_image is not None:
            controls.append(item.control_image)
        return item

    cells, results = run_sweep(
        engine, job_id, request, cell_item,
        on_step, should_stop, row_budget=batching.max_rows, decode_chunk=batching.decode_chunk,
    )  # fmt: skip
    combined = ItemResult(job_id)
    for result in results:
        combined.cancelled |= result.cancelled
        if result.error is not None and combined.error is None:
            combined.error = result.error
        combined.images.extend(result.images)
    if not combined.ok:
        return combined, []
    from gouache.worker.sweeps import sweep_artifacts

    # Every cell follows the one upload (fitted to its size): the first cell's map, once.
    return combined, sweep_artifacts(job_id, request, cells, combined, controls[0] if controls else None)


class _EstimatedOnce:
    """An ``EstimatorLookup`` that remembers estimates: a sweep's /depth cells all read the same
    upload, so its depth is estimated once per sweep, not once per cell."""

    def __init__(self, lookup: EstimatorLookup) -> None:
        self._lookup = lookup
        self.estimates: dict[tuple[str, tuple[int, int], bytes], Any] = {}

    def __call__(self, model: str) -> DepthEstimatorLike | None:
        inner = self._lookup(model)
        return None if inner is None else _Remembering(self, model, inner)


class _Remembering:
    def __init__(self, owner: _EstimatedOnce, model: str, inner: DepthEstimatorLike) -> None:
        self._owner, self._model, self._inner = owner, model, inner
        self.name = inner.name

    def estimate(self, image: Image) -> Any:
        key = (self._model, image.size, image.tobytes())
        if key not in self._owner.estimates:
            self._owner.estimates[key] = self._inner.estimate(image)
        return self._owner.estimates[key]


def process_artifacts(
    job_id: str, request: Request, result: ItemResult, model: LoadedModel, gif: GifSettings
) -> list[Artifact]:
    """``process.gif`` (image -> noise -> image) and ``process-strip.png`` (timestep under
    each frame) for the first image."""
    from gouache.generation.experiments.grid import labelled_strip
    from gouache.generation.experiments.noising import process_frames
    from gouache.generation.gif import encode_gif
    from gouache.generation.png import encode_png

    if not result.images or not result.frames:
        return []
    story = process_frames(
        model, result.images[0], result.frames[0], sampler=request.sampler, steps=request.steps,
        every=frames_every(request, gif), seed=request.image_seed(0),
    )  # fmt: skip
    data = encode_gif(story.frames, max_bytes=gif.max_bytes, frame_ms=gif.frame_ms, hold_ms=gif.hold_ms)
    strip = labelled_strip(story.frames, story.labels, title="forward (noising) then reverse (denoising)")
    return [
        Artifact(job_id, "process.gif", ArtifactKind.GIF, "image/gif", data),
        Artifact(job_id, "process-strip.png", ArtifactKind.IMAGE, "image/png", encode_png(strip)),
    ]

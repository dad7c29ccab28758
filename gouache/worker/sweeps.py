"""Sweeps: a request with ``--sweep`` axes -> its cells -> one labelled grid plus the cells.

Every cell is the request with the axes' values applied (same seed unless seed is an axis),
so cell *k* equals the same request made on its own, and cells share denoiser calls:
every cell of one shape (model and latent size; only an ``ar`` or ``size`` axis gives several)
is a lane of one running batch, whatever its cfg, steps, sampler, seed, prompt or strength, so
a 3x3 cfg x steps sweep makes ``max(steps)`` denoiser calls rather than the sum of the cells'
steps (while it fits ``row_budget``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from gouache import messages
from gouache.generation.loop.batch import BatchItem, ItemResult, ShapeKey
from gouache.request import Request
from gouache.storage.jobs import Artifact, ArtifactKind
from gouache.worker.jobs import lane_spec, shape_of

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["Cell", "cells", "run_sweep", "sweep_artifacts", "sweep_grid"]

_FIELDS = {"cfg": "guidance", "steps": "steps", "sampler": "sampler", "seed": "seed",
           "strength": "strength"}  # fmt: skip


@dataclass(frozen=True)
class Cell:
    index: int  # row-major: the first axis runs along the columns
    labels: tuple[str, ...]  # this cell's value on each axis
    request: Request  # the request this cell is on its own (no sweep)


def _apply(request: Request, axis: str, value: str) -> Request:
    if axis == "prompt":
        return replace(request, prompt=request.prompt.replace("{}", value),
                       model_prompt=request.model_prompt.replace("{}", value))  # fmt: skip
    if axis == "size":
        width, _, height = value.partition("x")
        return replace(request, width=int(width), height=int(height))
    name = _FIELDS[axis]
    current = getattr(request, name)
    kind: Callable[[str], Any] = type(current) if isinstance(current, int | float | str) else str
    return replace(request, **{name: kind(value)})


def cells(request: Request) -> list[Cell]:
    """Every combination of the axes' values, row-major (first axis = columns)."""
    if not request.sweep:
        return [Cell(0, (), request)]
    base = replace(request, sweep=(), notes=())
    axes = list(request.sweep)
    columns = axes[0]
    rows = axes[1] if len(axes) > 1 else ("", ("",))
    out: list[Cell] = []
    for row in rows[1]:
        for col in columns[1]:
            cell = _apply(base, columns[0], col)
            labels: tuple[str, ...] = (col,)
            if len(axes) > 1:
                cell, labels = _apply(cell, rows[0], row), (col, row)
            out.append(Cell(len(out), labels, cell))
    return out


def run_sweep(
    engine: Any,
    job_id: str,
    request: Request,
    item_for: Callable[[str, Request], BatchItem],
    on_step: Callable[[int, int], None] | None = None,
    should_stop: Callable[[str], bool] | None = None,
    *,
    row_budget: int = 16,
    decode_chunk: int = 2,
) -> tuple[list[Cell], list[ItemResult]]:
    """Run every cell, each shape's cells as lanes of one running batch; results in cell order.

    Up to ``row_budget`` denoiser rows per step. ``on_step`` sees the whole sweep's progress
    in image-steps (done, total).
    """
    sweep_cells = cells(request)
    items = {cell.index: item_for(f"{job_id}:{cell.index}", cell.request) for cell in sweep_cells}
    shapes: dict[ShapeKey, list[Cell]] = {}
    for cell in sweep_cells:
        shapes.setdefault(shape_of(cell.request), []).append(cell)
    total = sum(cell.request.steps for cell in sweep_cells)
    done = 0
    results: dict[int, ItemResult] = {}
    for shape, group in shapes.items():
        batch = engine.running_batch(shape, row_budget=row_budget, decode_chunk=decode_chunk)
        by_id = {items[cell.index].item_id: cell for cell in group}
        for cell in group:
            batch.admit(items[cell.index], lane_spec(cell.request), user=job_id)
        while len(batch):
            if should_stop is not None and should_stop(job_id):
                for item_id in by_id:
                    batch.cancel(item_id)
            for result in batch.step():
                cell = by_id[result.item_id]
                results[cell.index] = result
                done += cell.request.steps
            if on_step is not None:
                running = sum(steps for steps, _ in batch.progress().values())
                on_step(min(done + running, total), total)
    return sweep_cells, [results[cell.index] for cell in sweep_cells]


def sweep_grid(request: Request, images: Sequence[Image]) -> Image:
    """The labelled grid: axis names and values on the top and left edges."""
    from gouache.generation.experiments.grid import labelled_grid

    axes = list(request.sweep)
    rows = (axes[1][0], axes[1][1]) if len(axes) > 1 else None
    title = f"{request.prompt} | seed {request.seed}"
    return labelled_grid(images, (axes[0][0], axes[0][1]), rows, title=title[:120])


def sweep_artifacts(
    job_id: str, request: Request, cells: Sequence[Any], result: ItemResult, depth: Image | None = None
) -> list[Artifact]:
    """The labelled grid (``grid.png``, no index) first, then every cell as ``image-k.png``
    with the parameters of that cell made on its own (``cells`` from ``worker/sweeps.py``),
    then for /depth the depth map the cells followed (``depth.png``, once)."""
    from gouache.generation.png import encode_png, png_parameters
    from gouache.worker.jobs import depth_artifact

    out = [Artifact(job_id, "grid.png", ArtifactKind.IMAGE, "image/png",
                    encode_png(sweep_grid(request, result.images), sweep_description(request)))]  # fmt: skip
    for cell, image in zip(cells, result.images, strict=True):
        data = encode_png(image, png_parameters(cell.request))
        out.append(Artifact(job_id, f"image-{cell.index}.png", ArtifactKind.IMAGE, "image/png", data, cell.index))
    if depth is not None:
        out.append(depth_artifact(job_id, request, depth))
    return out


# The A1111 field each sweep axis varies (prompt: the first line, with its "{}"; cfg: what the
# model's guidance is called, messages.guidance_label).
_PARAMETER_LABELS = {"steps": "Steps", "sampler": "Sampler", "seed": "Seed",
                     "size": "Size", "ar": "Size"}  # fmt: skip


def sweep_description(request: Request) -> str:
    """The grid's ``parameters`` text: the base parameters with every swept field showing the
    values its cells used (``CFG scale: 3/7/12``), then the axes."""
    import re

    from gouache.generation.png import png_parameters

    text = png_parameters(request)
    for axis, values in request.sweep:
        label = messages.guidance_label(request.guidance_kind) if axis == "cfg" else _PARAMETER_LABELS.get(axis)
        if label is not None:
            shown = f"{label}: {'/'.join(values)}".replace("\\", "\\\\")  # a literal replacement
            text = re.sub(rf"{label}: [^,\n]+", shown, text, count=1)
    axes = "; ".join(f"{axis}={','.join(values)}" for axis, values in request.sweep)
    return f"{text}\nSweep: {axes}"

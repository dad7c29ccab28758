"""Sweeps: a request with ``--sweep`` axes -> its cells -> one labelled grid plus the cells.

Every cell is the request with the axes' values applied (same seed unless seed is an axis),
so cell *k* equals the same request made on its own. Cells that share a batch key (a cfg or
seed axis shares one; steps, sampler and size split it) run in one ``Engine.generate`` call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from gouache.generation.batch import BatchItem, BatchKey, ItemResult
from gouache.request import Request

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["Cell", "cells", "run_sweep", "sweep_grid"]

_FIELDS = {"cfg": "guidance", "steps": "steps", "sampler": "sampler", "seed": "seed",
           "strength": "strength"}  # fmt: skip


@dataclass(frozen=True)
class Cell:
    index: int  # row-major: the first axis runs along the columns
    labels: tuple[str, ...]  # this cell's value on each axis
    request: Request  # the request this cell is on its own (no sweep)


def _apply(request: Request, axis: str, value: str) -> Request:
    if axis == "prompt":
        return replace(request, prompt=request.prompt.replace("{}", value))
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
    key_for: Callable[[Request], BatchKey],
    on_step: Callable[[int, int], None] | None = None,
    should_stop: Callable[[str], bool] | None = None,
) -> tuple[list[Cell], list[ItemResult]]:
    """Run every cell, cells sharing a batch key in one engine call; results in cell order.

    ``on_step`` sees the whole sweep's progress in image-steps (done, total).
    """
    sweep_cells = cells(request)
    groups: dict[BatchKey, list[Cell]] = {}
    for cell in sweep_cells:
        groups.setdefault(key_for(cell.request), []).append(cell)
    total = sum(key.steps * len(group) for key, group in groups.items())
    done = 0
    results: dict[int, ItemResult] = {}
    for key, group in groups.items():
        items = [item_for(f"{job_id}:{cell.index}", cell.request) for cell in group]

        def step(n: int, steps: int, _done: int = done, _rows: int = len(group)) -> None:
            if on_step is not None:
                on_step(_done + n * _rows, total)

        stop = (lambda _item: should_stop(job_id)) if should_stop is not None else None
        for cell, result in zip(group, engine.generate(key, items, step, stop), strict=True):
            results[cell.index] = result
        done += key.steps * len(group)
    return sweep_cells, [results[cell.index] for cell in sweep_cells]


def sweep_grid(request: Request, images: Sequence[Image]) -> Image:
    """The labelled grid: axis names and values on the top and left edges."""
    from gouache.generation.experiments.grid import labelled_grid

    axes = list(request.sweep)
    rows = (axes[1][0], axes[1][1]) if len(axes) > 1 else None
    title = f"{request.prompt} | seed {request.seed}"
    return labelled_grid(images, (axes[0][0], axes[0][1]), rows, title=title[:120])

"""What the worker needs of the engine and its running batches (tests and benchmarks use fakes).

``generation.loop.engine.Engine`` and ``generation.loop.running.RunningBatch`` are the real ones;
``worker.engine`` in the settings names the class (``module:Class``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from gouache.generation.loop.batch import BatchItem, BatchKey, ItemResult, LaneSpec, ShapeKey

__all__ = ["EngineLike", "RunningBatchLike"]


class RunningBatchLike(Protocol):
    """A running batch: items join, every ``step()`` advances them, retired items come back."""

    @property
    def free_rows(self) -> int: ...

    def __len__(self) -> int: ...

    def admit(self, item: BatchItem, spec: LaneSpec, user: str | None = None) -> None: ...

    def cancel(self, item_id: str) -> None: ...

    def step(self) -> list[ItemResult]: ...

    def progress(self) -> dict[str, tuple[int, int]]: ...


class EngineLike(Protocol):
    def warm_up(self, model: str, max_rows: int | None = None) -> None: ...

    def resident_models(self) -> tuple[str, ...]: ...

    def generate(
        self,
        key: BatchKey,
        items: Sequence[BatchItem],
        on_step: Callable[[int, int], None] | None = None,
        should_stop: Callable[[str], bool] | None = None,
    ) -> list[ItemResult]: ...

    def running_batch(self, shape: ShapeKey, *, row_budget: int, decode_chunk: int) -> RunningBatchLike: ...

"""Engines for worker and service tests: real protocol, fake GPU.

``TimedEngine`` takes ``a + b * images`` seconds per batch (read from ``GOUACHE_TEST_BATCH_A`` /
``GOUACHE_TEST_BATCH_B``), reports every step, honours cancellation, and draws a flat colour
derived from the seed so results can be told apart. Prompts carry the faults a test asks for:
``kill-the-worker`` SIGKILLs this process mid-batch, ``sticky-cuda`` raises the engine's
``FatalDeviceError``. ``PoisonableEngine`` wraps another engine and exits the process on
a poison prompt, every time. Every batch is appended as one JSON line to ``GOUACHE_TEST_BATCH_LOG``
when set, so a test can see what ran together.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image

from gouache.generation.loop.batch import BatchItem, BatchKey, ItemResult, LaneSpec, ShapeKey
from gouache.generation.loop.samplers import SAMPLERS


class TimedEngine:
    def __init__(self, registry: Any = None) -> None:
        self.a = float(os.environ.get("GOUACHE_TEST_BATCH_A", "0.05"))
        self.b = float(os.environ.get("GOUACHE_TEST_BATCH_B", "0.01"))
        self.log_path = os.environ.get("GOUACHE_TEST_BATCH_LOG")

    def warm_up(self, model: str, max_rows: int | None = None) -> None:
        """Nothing to load: there is no model."""

    def resident_models(self) -> tuple[str, ...]:
        """No model is ever on a card: claims keep the strict fair order."""
        return ()

    def generate(
        self,
        key: BatchKey,
        items: Sequence[BatchItem],
        on_step: Callable[[int, int], None] | None = None,
        should_stop: Callable[[str], bool] | None = None,
    ) -> list[ItemResult]:
        if self.log_path:
            with open(self.log_path, "a") as fh:
                fh.write(json.dumps({"pid": os.getpid(), "items": [i.item_id for i in items]}) + "\n")
        images = sum(item.count for item in items)
        step_time = (self.a + self.b * images) / key.steps
        stopped: set[str] = set()
        for step in range(1, key.steps + 1):
            time.sleep(step_time)
            if any("kill-the-worker" in item.prompt for item in items) and step * 2 >= key.steps:
                os.kill(os.getpid(), signal.SIGKILL)
            if any("sticky-cuda" in item.prompt for item in items):
                from gouache.generation.loop.device import FatalDeviceError

                raise FatalDeviceError("CUDA error: an illegal memory access was encountered")
            if should_stop:
                stopped |= {item.item_id for item in items if should_stop(item.item_id)}
            if on_step:
                on_step(step, key.steps)
        return [self._result(key, item, item.item_id in stopped) for item in items]

    def running_batch(self, shape: ShapeKey, *, row_budget: int, decode_chunk: int) -> TimedRunningBatch:
        return TimedRunningBatch(self, shape, row_budget)

    @staticmethod
    def _result(key: BatchKey, item: BatchItem, cancelled: bool) -> ItemResult:
        if cancelled:
            return ItemResult(item.item_id, cancelled=True)
        images = []
        for i in range(item.count):
            seed = item.seed + i
            colour = (seed * 37 % 256, seed * 91 % 256, seed * 53 % 256)
            images.append(Image.new("RGB", (key.width, key.height), colour))
        frames = [[img.copy() for _ in range(8)] for img in images] if item.frames_every else []
        return ItemResult(item.item_id, images=images, frames=frames)



class TimedRunningBatch:
    """A step-level running batch with the same faults and timing as ``TimedEngine``.

    Each ``step`` sleeps ``(a + b * lanes) / 20`` seconds and advances every admitted item by
    one step; items retire when their steps are done. ``GOUACHE_TEST_BATCH_LOG`` gets one line
    per step listing the items that shared it.
    """

    def __init__(self, engine: TimedEngine, shape: ShapeKey, row_budget: int) -> None:
        self._engine = engine
        self._shape = shape
        self.row_budget = row_budget
        self._items: dict[str, tuple[BatchItem, LaneSpec, int]] = {}  # id -> (item, spec, done)
        self._cancelled: set[str] = set()

    @property
    def free_rows(self) -> int:
        used = sum(item.count * (2 if spec.guidance > 1 else 1) for item, spec, _ in self._items.values())
        return max(0, self.row_budget - used)

    def __len__(self) -> int:
        return len(self._items)

    def admit(self, item: BatchItem, spec: LaneSpec, user: str | None = None) -> None:
        if spec.sampler not in SAMPLERS:
            from gouache.errors import InvalidRequest

            raise InvalidRequest(f"Unknown sampler {spec.sampler!r}.")
        self._items[item.item_id] = (item, spec, 0)

    def cancel(self, item_id: str) -> None:
        if item_id in self._items:
            self._cancelled.add(item_id)

    def progress(self) -> dict[str, tuple[int, int]]:
        return {i: (done, spec.steps) for i, (_, spec, done) in self._items.items()}

    def step(self) -> list[ItemResult]:
        out = [ItemResult(i, cancelled=True) for i in self._cancelled]
        for item_id in self._cancelled:
            self._items.pop(item_id, None)
        self._cancelled.clear()
        if not self._items:
            return out
        engine = self._engine
        if engine.log_path:
            with open(engine.log_path, "a") as fh:
                fh.write(json.dumps({"pid": os.getpid(), "items": list(self._items)}) + "\n")
        lanes = sum(item.count for item, _, _ in self._items.values())
        time.sleep((engine.a + engine.b * lanes) / 20)
        for item_id, (item, spec, done) in list(self._items.items()):
            done += 1
            if "kill-the-worker" in item.prompt and done * 2 >= spec.steps:
                os.kill(os.getpid(), signal.SIGKILL)
            if "sticky-cuda" in item.prompt:
                from gouache.generation.loop.device import FatalDeviceError

                raise FatalDeviceError("CUDA error: an illegal memory access was encountered")
            if done >= spec.steps:
                key = BatchKey(self._shape.model, spec.pipeline, self._shape.width,
                               self._shape.height, spec.steps, spec.sampler, spec.guidance)  # fmt: skip
                out.append(TimedEngine._result(key, item, cancelled=False))
                del self._items[item_id]
            else:
                self._items[item_id] = (item, spec, done)
        return out


POISON = "chaos-poison-pill"
EXIT_POISONED = 86


class PoisonableEngine:
    """Another engine (``GOUACHE_TEST_INNER_ENGINE``, default the real one) plus one poison.

    A batch holding a prompt with ``POISON`` ends this process with ``os._exit`` before any
    work, on every attempt: the job that kills its worker each time (``benchmarks/chaos.py``).
    Everything else is the inner engine's own: ``generate`` is the only method looked at, the
    rest is delegated, so the wrapper follows the engine's interface as it changes.
    """

    def __init__(self, registry: Any = None) -> None:
        import importlib

        spec = os.environ.get("GOUACHE_TEST_INNER_ENGINE", "gouache.generation.loop.engine:Engine")
        module, _, name = spec.partition(":")
        self._inner = getattr(importlib.import_module(module), name)(registry)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def warm_up(self, model: str, max_rows: int | None = None) -> None:
        self._inner.warm_up(model, max_rows)

    def generate(self, key: BatchKey, items: Sequence[BatchItem], *args: Any, **kwargs: Any) -> Any:
        if any(POISON in item.prompt for item in items):
            os._exit(EXIT_POISONED)
        return self._inner.generate(key, items, *args, **kwargs)

    def running_batch(self, shape: ShapeKey, **kwargs: Any) -> Any:
        return _PoisonableBatch(self._inner.running_batch(shape, **kwargs))


class _PoisonableBatch:
    """The inner engine's running batch; admitting the poison ends the process (step mode)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __len__(self) -> int:
        return len(self._inner)

    def admit(self, item: BatchItem, *args: Any, **kwargs: Any) -> None:
        if POISON in item.prompt:
            os._exit(EXIT_POISONED)
        self._inner.admit(item, *args, **kwargs)

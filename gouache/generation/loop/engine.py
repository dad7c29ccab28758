"""The engine: what the worker and ``gouache generate`` hold to run the one denoising loop.

``generate(key, items)`` is the running batch (``running.py``) with every item admitted at once
and stepped to the end: there is no second loop. Out of memory, the batch's steps are split in
halves of its lanes down to single lanes, a decode falls back to a tiled VAE, and an item that
still does not fit fails alone with ``ResourceExhausted`` while the others complete. Sticky CUDA
errors surface as ``FatalDeviceError`` so the worker exits and restarts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gouache.errors import UserError
from gouache.generation.loop.batch import BatchItem, BatchKey, ItemResult, ShapeKey
from gouache.generation.loop.device import FatalDeviceError, Fault, OnStep, ShouldStop
from gouache.generation.loop.memory import plan_memory
from gouache.generation.loop.running import RunningBatch, to_pil
from gouache.generation.loop.warmup import compile_buckets
from gouache.generation.models import LoadedModel, ModelRegistry

__all__ = ["Engine", "FatalDeviceError", "Fault", "OnStep", "ShouldStop"]


class Engine:
    """Opens running batches on a registry's models."""

    def __init__(self, registry: ModelRegistry, *, fault: Fault | None = None) -> None:
        self.registry = registry
        self._fault = fault  # called before each denoiser call and decode; tests raise OOM from it
        # The row budget each shape learned by shrinking after an out-of-memory: the next batch
        # of that shape starts there instead of meeting the same out-of-memory again.
        self.learned_budgets: dict[ShapeKey, int] = {}

    def warm_up(self, model: str, max_rows: int | None = None) -> None:
        """Load ``model`` now rather than on the first batch, and with ``speed.compile`` compile
        every bucket a batch of up to ``max_rows`` rows can meet (``warmup.compile_buckets``;
        a compile that fails raises ``errors.CompileError``)."""
        compile_buckets(self.running_batch, self.registry.get(model), max_rows)

    def resident_models(self) -> tuple[str, ...]:
        """The models on the device now: the worker prefers their jobs."""
        return self.registry.resident

    def model(self, name: str) -> LoadedModel:
        """The loaded model ``name`` (``--process`` and interpolation use its family)."""
        return self.registry.get(name)

    def latent_cell(self, model: str) -> int:
        """Pixels per latent along a side on ``model``: where tiles of one canvas may start."""
        loaded = self.registry.get(model)
        width = 8 * loaded.vae_scale_factor * 4
        return width // loaded.family.latent_shape(loaded, width, width)[-1]

    def running_batch(self, shape: ShapeKey, *, row_budget: int, decode_chunk: int) -> RunningBatch:
        """A running batch for ``shape`` that items join and leave at step boundaries.

        On CUDA the configured budgets are capped by what the card's free memory allows
        (``memory.plan_memory``); a shape that shrank before starts at what it learned.
        """
        model = self.registry.get(shape.model)
        if model.device.type == "cuda":
            import torch

            free, _total = torch.cuda.mem_get_info(model.device)
            plan = plan_memory(free, 0, shape.width, shape.height,
                               dtype_bytes=torch.finfo(model.dtype).bits // 8)  # fmt: skip
            row_budget, decode_chunk = min(row_budget, plan.row_budget), min(decode_chunk, plan.decode_chunk)
        row_budget = min(row_budget, self.learned_budgets.get(shape, row_budget))
        return RunningBatch(self.registry, shape, row_budget=row_budget, decode_chunk=decode_chunk,
                            fault=self._fault, postprocess=self._postprocess,
                            learned=self.learned_budgets)  # fmt: skip

    def generate(
        self,
        key: BatchKey,
        items: Sequence[BatchItem],
        on_step: OnStep | None = None,
        should_stop: ShouldStop | None = None,
    ) -> list[ItemResult]:
        """Every item's images, one result per item in order: admit all, run to the end.

        A user error every item shares (unknown model or sampler, no depth ControlNet) raises;
        one item's own problem (no control image, out of memory alone) is that item's result.
        ``on_step(done, total)`` ticks once per sampler step of the slowest image.
        """
        images = sum(item.count for item in items)
        batch = self.running_batch(key.shape, row_budget=1 << 30, decode_chunk=max(1, images))
        batch.check(key.spec)
        results: dict[str, ItemResult] = {}
        for item in items:
            try:  # one user: the lanes run in the order given, all in one call while they fit
                batch.admit(item, key.spec, user="generate")
            except UserError as exc:
                results[item.item_id] = ItemResult(item.item_id, error=exc)
        done = 0
        while len(batch):
            for result in batch.step(should_stop):
                results[result.item_id] = result
            slowest = min((d for d, _ in batch.progress().values()), default=key.steps)
            if on_step is not None and slowest > done:
                done = slowest
                on_step(done, key.steps)
        return [results[item.item_id] for item in items]

    def _postprocess(self, image: Any, model: LoadedModel) -> list[Any]:
        """Decoded [-1, 1] tensors to pictures (parity tests override this to keep floats)."""
        return to_pil(image, model)

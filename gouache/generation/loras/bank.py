"""Per-row LoRAs: every row of one denoiser call gets its own adapters at its own scales.

The base weights are never fused or changed. Each Linear/Conv2d layer a loaded LoRA touches is
wrapped once by ``RowLora``, which adds, for each LoRA active in the current call,
``scale[row] * scaling * up(down(x))`` to the rows that use it (a gather and an ``index_add``
when only some rows do, one full-batch term when all do). The active set is the bank's state
for the length of one call (``LoraBank.rows``), set by the family's ``predict`` from
``Rows.loras``/``Rows.lora_scales``, and by the text encoding of one item (``LoraBank.item``).
With nothing active a wrapped layer is its base layer plus one empty loop.

PEFT can route adapters per row too (``adapter_names``), but diffusers' UNet call does not pass
it through, and PEFT's layers would have to be loaded as named adapters into the model; this
one small wrapper keeps the factors in a bank of its own, loaded once and dropped least
recently used first under ``budget_bytes``.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from gouache.generation.loras.weights import Factor, LoraWeights, load_lora, parts_of

if TYPE_CHECKING:
    from gouache.generation.families.base import LoadedModel

__all__ = ["LoraBank", "RowLora", "bank_of"]

PathOf = Callable[[str], "Path | None"]  # a LoRA's file from its name (None: unknown)


@dataclass
class _Term:
    """One active LoRA in this call: its weights, the rows using it (None: all), their scales."""

    weights: LoraWeights
    rows: torch.Tensor | None
    scale: torch.Tensor | float


class RowLora(torch.nn.Module):
    """A Linear or Conv2d layer plus the low-rank updates of the LoRAs active in this call."""

    def __init__(self, base: torch.nn.Module, part: str, name: str, bank: LoraBank) -> None:
        super().__init__()
        self.base = base
        self._key = (part, name)
        self._bank = [bank]  # a list: not a registered submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        part, name = self._key
        for term in self._bank[0].active:
            factor = term.weights.parts.get(part, {}).get(name)
            if factor is not None:
                out = _add(out, x, factor, term, self.base)
        return out

    def __getattr__(self, attr: str) -> Any:  # weight, bias, in_features... of the base layer
        try:
            return super().__getattr__(attr)
        except AttributeError:
            return getattr(self._modules["base"], attr)


def _add(out: torch.Tensor, x: torch.Tensor, factor: Factor, term: _Term, base: Any) -> torch.Tensor:
    if term.rows is not None:
        x = x.index_select(0, term.rows)
    if factor.down.ndim == 4:  # Conv2d: down has the base's kernel, up is 1x1 (as PEFT's)
        h = F.conv2d(x, factor.down, stride=base.stride, padding=base.padding, dilation=base.dilation)
        delta = F.conv2d(h, factor.up)
    else:
        delta = F.linear(F.linear(x, factor.down), factor.up)
    scale = term.scale
    if isinstance(scale, torch.Tensor):
        scale = (scale * factor.scaling).to(delta.dtype).view(-1, *([1] * (delta.ndim - 1)))
    else:
        scale = scale * factor.scaling
    if term.rows is None:
        return out + delta * scale
    return out.index_add(0, term.rows, delta * scale)


class LoraBank:
    """One model's loaded LoRAs (least recently used dropped first) and the active set."""

    def __init__(self, model: LoadedModel, path_of: PathOf, budget_bytes: int = 1 << 30) -> None:
        self.model = model
        self.path_of = path_of
        self.budget_bytes = budget_bytes
        self.active: list[_Term] = []
        self._loaded: OrderedDict[str, LoraWeights] = OrderedDict()
        self._wrapped: set[tuple[str, str]] = set()

    @property
    def loaded(self) -> tuple[str, ...]:
        return tuple(self._loaded)

    @property
    def nbytes(self) -> int:
        return sum(w.nbytes for w in self._loaded.values())

    def prepare(self, names: Sequence[str]) -> list[LoraWeights]:
        """Load ``names`` (once; most recently used last) and drop others over the budget.

        Raises ``LoraFileError`` (a ``ValueError``) naming the file and the cause.
        """
        from gouache.generation.loras.weights import LoraFileError

        out = []
        for name in names:
            if name not in self._loaded:
                path = self.path_of(name)
                if path is None:
                    raise LoraFileError(f"no LoRA named {name!r} is configured on this worker")
                weights = load_lora(name, path, self.model)
                self._wrap(weights)
                self._loaded[name] = weights
            self._loaded.move_to_end(name)
            out.append(self._loaded[name])
        keep = set(names)
        for name in list(self._loaded):
            if self.nbytes <= self.budget_bytes:
                break
            if name not in keep:
                del self._loaded[name]
        return out

    @contextlib.contextmanager
    def rows(self, names: Sequence[str], scales: torch.Tensor | None) -> Iterator[None]:
        """Activate LoRA ``names[k]`` at ``scales[row, k]`` for one call (zero: not that row)."""
        if not names or scales is None:
            yield
            return
        terms = []
        for k, weights in enumerate(self.prepare(names)):
            column = scales[:, k]
            used = torch.nonzero(column).flatten()
            if len(used) == len(column):
                terms.append(_Term(weights, None, column))
            elif len(used):
                terms.append(_Term(weights, used, column.index_select(0, used)))
        with self._active(terms):
            yield

    @contextlib.contextmanager
    def item(self, loras: Sequence[tuple[str, float]]) -> Iterator[None]:
        """Activate one item's LoRAs on every row (its text encoding)."""
        weights = self.prepare([name for name, _ in loras]) if loras else []
        terms = [_Term(w, None, float(scale)) for w, (_, scale) in zip(weights, loras, strict=True)]
        with self._active(terms):
            yield

    @contextlib.contextmanager
    def _active(self, terms: list[_Term]) -> Iterator[None]:
        before, self.active = self.active, terms
        try:
            yield
        finally:
            self.active = before

    def _wrap(self, weights: LoraWeights) -> None:
        """Wrap each layer ``weights`` touches (once; a wrapped layer stays wrapped)."""
        roots = parts_of(self.model)
        for part, factors in weights.parts.items():
            for name in factors:
                if (part, name) in self._wrapped:
                    continue
                parent_name, _, child = name.rpartition(".")
                parent = roots[part].get_submodule(parent_name) if parent_name else roots[part]
                layer = getattr(parent, child)
                if isinstance(layer, RowLora):  # wrapped by an earlier bank of this model
                    layer._bank[0] = self
                else:
                    setattr(parent, child, RowLora(layer, part, name, self))
                self._wrapped.add((part, name))


def bank_of(model: LoadedModel) -> LoraBank | None:
    """The model's LoRA bank, None when the worker was given no LoRAs."""
    return getattr(model, "loras", None)

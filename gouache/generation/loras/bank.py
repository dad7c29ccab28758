"""Per-row LoRAs: every row of one denoiser call gets its own adapters at its own scales.

The base weights are never fused or changed. Each Linear/Conv2d layer a loaded LoRA touches is
wrapped once by ``RowLora``, which adds ``sum_k scale[row, k] * scaling_k * up_k(down_k(x))``
over the LoRAs active in the current call, as one grouped pair of products (the active LoRAs'
ranks side by side, each rank column scaled per row; zero for a row without that LoRA). The
active set is the bank's state
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

from gouache.generation.loras.weights import LoraWeights, load_lora, part_device, parts_of

if TYPE_CHECKING:
    from gouache.generation.families.base import LoadedModel

__all__ = ["LoraBank", "RowLora", "bank_of"]

PathOf = Callable[[str], "Path | None"]  # a LoRA's file from its name (None: unknown)


@dataclass
class _Active:
    """The LoRAs of this call and each row's scale for each (a row of 1 applies to all rows)."""

    names: tuple[str, ...]
    weights: list[LoraWeights]
    scales: torch.Tensor  # (rows or 1, len(names))


@dataclass
class _Group:
    """One layer's factors of the active LoRAs side by side: ``down`` (R, in...), ``up``
    (out, R...), and for each of the R rank columns its LoRA's index and scaling."""

    down: torch.Tensor
    up: torch.Tensor
    lora: torch.Tensor  # (R,) index into _Active.names
    scaling: torch.Tensor  # (R,)


class RowLora(torch.nn.Module):
    """A Linear or Conv2d layer plus the low-rank updates of the LoRAs active in this call.

    All active LoRAs are applied as one grouped pair of products: ``h = down_all(x)`` (their
    ranks side by side), each column scaled by its row's scale for that LoRA (zero for a row
    that does not use it), then ``up_all(h)``: two calls whatever the number of LoRAs.
    """

    def __init__(self, base: torch.nn.Module, part: str, name: str, bank: LoraBank) -> None:
        super().__init__()
        self.base = base
        self._key = (part, name)
        self._bank = [bank]  # a list: not a registered submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        bank = self._bank[0]
        active = bank.active
        if active is None:
            return out
        group = bank.group(self._key)
        if group is None:
            return out
        column = (active.scales[:, group.lora] * group.scaling).to(out.dtype)  # (rows, R)
        if group.down.ndim == 4:  # Conv2d: down has the base's kernel, up is 1x1 (as PEFT's)
            base: Any = self.base
            h = F.conv2d(x, group.down, stride=base.stride, padding=base.padding, dilation=base.dilation)
            h = h * column.view(column.shape[0], -1, 1, 1)
            return out + F.conv2d(h, group.up)
        h = F.linear(x, group.down)
        h = h * column.view(column.shape[0], *([1] * (h.ndim - 2)), -1)
        return out + F.linear(h, group.up)

    def __getattr__(self, attr: str) -> Any:  # weight, bias, in_features... of the base layer
        try:
            return super().__getattr__(attr)
        except AttributeError:
            return getattr(self._modules["base"], attr)


class LoraBank:
    """One model's loaded LoRAs (least recently used dropped first) and the active set."""

    def __init__(self, model: LoadedModel, path_of: PathOf, budget_bytes: int = 1 << 30) -> None:
        self.model = model
        self.path_of = path_of
        self.budget_bytes = budget_bytes
        self.active: _Active | None = None
        self._loaded: OrderedDict[str, LoraWeights] = OrderedDict()
        self._wrapped: set[tuple[str, str]] = set()
        # Grouped factors per (active names, layer), built on first use; cleared on any change.
        self._groups: dict[tuple[tuple[str, ...], tuple[str, str]], _Group | None] = {}

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
                self._groups.clear()
            self._loaded.move_to_end(name)
            out.append(self._loaded[name])
        keep = set(names)
        for name in list(self._loaded):
            if self.nbytes <= self.budget_bytes:
                break
            if name not in keep:
                del self._loaded[name]
                self._groups.clear()
        return out

    def clear(self) -> None:
        """Let every loaded LoRA go (its model left the device); layers stay wrapped."""
        self._loaded.clear()
        self._groups.clear()

    @contextlib.contextmanager
    def rows(self, names: Sequence[str], scales: torch.Tensor | None) -> Iterator[None]:
        """Activate LoRA ``names[k]`` at ``scales[row, k]`` for one call (zero: not that row)."""
        if not names or scales is None:
            yield
            return
        with self._active(_Active(tuple(names), self.prepare(names), scales)):
            yield

    @contextlib.contextmanager
    def item(self, loras: Sequence[tuple[str, float]]) -> Iterator[None]:
        """Activate one item's LoRAs on every row (its text encoding)."""
        names = [name for name, _ in loras]
        weights = self.prepare(names) if loras else []
        scales = torch.tensor([[float(scale) for _, scale in loras]], device=self.model.text_device)
        with self._active(_Active(tuple(names), weights, scales) if loras else None):
            yield

    def group(self, key: tuple[str, str]) -> _Group | None:
        """The active LoRAs' factors of layer ``key`` side by side (None: none touches it)."""
        active = self.active
        assert active is not None
        cached = (active.names, key)
        if cached not in self._groups:
            self._groups[cached] = _grouped(active, key, part_device(self.model, key[0]))
        return self._groups[cached]

    @contextlib.contextmanager
    def _active(self, active: _Active | None) -> Iterator[None]:
        before, self.active = self.active, active
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


def _grouped(active: _Active, key: tuple[str, str], device: torch.device) -> _Group | None:
    part, name = key
    found = [(k, f) for k, w in enumerate(active.weights) if (f := w.parts.get(part, {}).get(name)) is not None]
    if not found:
        return None
    ranks = [f.down.shape[0] for _, f in found]
    lora = torch.tensor([k for (k, _), r in zip(found, ranks, strict=True) for _ in range(r)], device=device)
    scaling = torch.tensor([f.scaling for (_, f), r in zip(found, ranks, strict=True) for _ in range(r)],
                           device=device)  # fmt: skip
    return _Group(torch.cat([f.down for _, f in found]), torch.cat([f.up for _, f in found], dim=1),
                  lora, scaling)  # fmt: skip


def bank_of(model: LoadedModel) -> LoraBank | None:
    """The model's LoRA bank, None when the worker was given no LoRAs."""
    return getattr(model, "loras", None)

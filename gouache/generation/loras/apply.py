"""Where the loop meets the LoRA bank: an item's LoRAs at admission, each row's at a call."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from gouache import messages
from gouache.errors import InvalidRequest

if TYPE_CHECKING:
    from gouache.generation.families.base import LoadedModel, Rows

__all__ = ["row_loras", "item_loras"]


@contextlib.contextmanager
def row_loras(model: LoadedModel, rows: Rows) -> Iterator[None]:
    """Inside: the denoiser adds each row's LoRAs at that row's scales."""
    if not rows.loras or model.loras is None:
        yield
        return
    with model.loras.rows(rows.loras, rows.lora_scales):
        yield


def item_loras(model: LoadedModel, loras: Sequence[tuple[str, float]]) -> contextlib.AbstractContextManager[None]:
    """Load an item's LoRAs before it joins (a bad file fails this item alone, with its
    cause); the context applies them to the item's text encoding."""
    if not loras:
        return contextlib.nullcontext()
    bank = model.loras
    if bank is None:
        raise InvalidRequest(messages.lora_unknown(loras[0][0], []))
    from gouache.generation.loras.weights import LoraFileError

    for name, _ in loras:
        try:
            bank.prepare([name])
        except LoraFileError as exc:
            raise InvalidRequest(messages.lora_unusable(name, model.name, str(exc))) from exc
    return bank.item(loras)

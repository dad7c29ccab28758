"""The LoRAs a deployment offers: configured entries plus a scanned folder, read without torch.

The bot checks ``--lora NAME`` at admission (unknown names with the nearest ones, a LoRA made
for another family, an unreadable file) and the worker finds each file's path here, so both
build the same ``LoraCatalog`` from the settings. Only the safetensors header is read (key
names, shapes and metadata, through ``safetensors.safe_open``): no tensor is loaded and
neither torch nor diffusers is imported.

A file's family comes from kohya's metadata (``ss_base_model_version``), the modelspec
architecture, or its keys: a second text encoder (``lora_te2_``/``text_encoder_2``), SGM block
names (``input_blocks``) or a 2048-wide cross-attention input mean SDXL; 768 or 1024 mean SD.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gouache.config import Settings

__all__ = ["LoraEntry", "LoraCatalog", "read_family", "FAMILIES"]

FAMILIES = ("sd", "sdxl")
_SD_WIDTHS = {768: "sd", 1024: "sd", 2048: "sdxl"}  # cross-attention input width (to_k, to_v)


@dataclass(frozen=True)
class LoraEntry:
    """One LoRA: where its file is, what it applies to, and how it is used by default."""

    name: str
    path: Path
    family: str | None  # "sd", "sdxl", or None when neither the config nor the file says
    model: str | None = None  # the one model it is for (None: any model of its family)
    trigger: tuple[str, ...] = ()
    default_scale: float = 1.0
    description: str = ""
    broken: str = ""  # why the file cannot be used (unreadable header), "" when fine

    def applies_to(self, model: str, family: str | None) -> bool:
        """Whether this LoRA may be used with ``model`` (of ``family``, None when unknown)."""
        if self.model is not None:
            return self.model == model
        return self.family is None or family is None or self.family == family


class LoraCatalog:
    """Name -> ``LoraEntry`` for every configured and scanned LoRA (configured entries win)."""

    def __init__(self, entries: Iterable[LoraEntry] = ()) -> None:
        self._entries = {entry.name: entry for entry in entries}

    @classmethod
    def from_settings(cls, settings: Settings) -> LoraCatalog:
        entries: dict[str, LoraEntry] = {}
        if settings.loras_dir is not None and Path(settings.loras_dir).is_dir():
            for path in sorted(Path(settings.loras_dir).glob("*.safetensors")):
                entries[path.stem] = _entry(path.stem, path, "auto")
        for name, spec in settings.loras.items():
            entries[name] = _entry(name, Path(spec.path), spec.family, model=spec.model,
                                   trigger=tuple(spec.trigger), default_scale=spec.default_scale,
                                   description=spec.description)  # fmt: skip
        return cls(entries.values())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str) -> LoraEntry | None:
        return self._entries.get(name)

    def path_for(self, name: str) -> Path | None:
        """A LoRA's file (what the worker's ``LoraBank`` loads), None for an unknown name."""
        entry = self._entries.get(name)
        return entry.path if entry is not None else None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._entries))

    def resolve(self, name: str) -> LoraEntry | None:
        """The entry named ``name``, or its only case-insensitive match."""
        if name in self._entries:
            return self._entries[name]
        folded = [e for n, e in self._entries.items() if n.casefold() == name.casefold()]
        return folded[0] if len(folded) == 1 else None

    def nearest(self, name: str, limit: int = 3) -> list[str]:
        """The names closest to a mistyped one (for the error message)."""
        return difflib.get_close_matches(name, self.names, n=limit, cutoff=0.5)

    def for_model(self, model: str, family: str | None) -> list[LoraEntry]:
        """The usable LoRAs for ``model``, sorted by name (what ``/loras`` lists)."""
        return [e for n, e in sorted(self._entries.items())
                if not e.broken and e.applies_to(model, family)]  # fmt: skip


def _entry(name: str, path: Path, family: str, **rest: object) -> LoraEntry:
    broken = ""
    found: str | None = None
    try:
        found = read_family(path)
    except (OSError, ValueError) as exc:  # missing, truncated or not safetensors at all
        broken = f"{type(exc).__name__}: {exc}"[:200]
    chosen = None if family == "auto" else family
    return LoraEntry(name, path, chosen or found, broken=broken, **rest)  # type: ignore[arg-type]


def read_family(path: Path) -> str | None:
    """The model family a LoRA file was trained for, from its header only (None: unknown).

    Raises ``OSError``/``ValueError`` when the file is missing or not a safetensors file.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata: Mapping[str, str] = f.metadata() or {}
            keys = list(f.keys())
            shapes = {k: f.get_slice(k).get_shape() for k in keys if _is_context_down(k)}
    except SafetensorError as exc:
        raise ValueError(f"not a readable safetensors file ({exc})") from None
    if not keys:
        raise ValueError("the file holds no tensors")
    return _family_from(metadata, keys, shapes)


def _is_context_down(key: str) -> bool:
    """A LoRA down/A matrix of a cross-attention key or value projection (reads the width)."""
    return ("attn2" in key and ("to_k" in key or "to_v" in key)
            and ("lora_down" in key or "lora_A" in key or "lora.down" in key))  # fmt: skip


def _family_from(metadata: Mapping[str, str], keys: list[str], shapes: Mapping[str, list[int]]) -> str | None:
    version = (metadata.get("ss_base_model_version", "") + metadata.get("modelspec.architecture", "")).lower()
    if "xl" in version:
        return "sdxl"
    if version.startswith(("sd_v1", "sd_v2", "stable-diffusion-v1", "stable-diffusion-v2")):
        return "sd"
    if any(k.startswith(("lora_te2_", "text_encoder_2.")) or "input_blocks" in k for k in keys):
        return "sdxl"
    for shape in shapes.values():
        if len(shape) >= 2 and shape[1] in _SD_WIDTHS:
            return _SD_WIDTHS[shape[1]]
    return None

"""``--lora NAME[:SCALE]`` and ``--style NAME`` at admission, and the ``/loras`` listing.

Every check a user can fail happens here, before a job is queued: an unknown name (with the
nearest ones), a LoRA for another family or model, a scale out of range, too many LoRAs, an
unreadable file (the catalog read its header at start). The catalog is read without torch
(``generation/loras/catalog.py``), once per configuration.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gouache import messages
from gouache.config import Settings, StyleSpec
from gouache.errors import InvalidRequest
from gouache.generation.loras.catalog import LoraCatalog, LoraEntry

__all__ = ["Styled", "catalog_for", "parse_lora", "resolve", "listing", "lora_names", "style_names"]

_LORA_RE = re.compile(r"^([^:\s]+)(?::([+-]?[0-9]*\.?[0-9]+))?$")


@dataclass(frozen=True)
class Styled:
    """What a style and LoRAs make of a request: the LoRAs and the text the model reads."""

    loras: tuple[tuple[str, float], ...]
    prompt: str
    negative: str
    steps: int | None  # the style's defaults, when it has them
    guidance: float | None


def catalog_for(settings: Settings) -> LoraCatalog:
    """The configured and scanned LoRAs (scanned once per configuration and folder listing)."""
    folder = settings.loras_dir
    listed = tuple(sorted(p.name for p in Path(folder).glob("*.safetensors"))) if folder and Path(folder).is_dir() else ()
    configured = tuple((name, spec.model_dump_json()) for name, spec in sorted(settings.loras.items()))
    key = (str(folder or ""), listed, configured)
    if key not in _CATALOGS:
        if len(_CATALOGS) >= 8:
            _CATALOGS.clear()
        _CATALOGS[key] = LoraCatalog.from_settings(settings)
    return _CATALOGS[key]


# Catalogs by (folder, its .safetensors files, configured entries): headers are read once.
_CATALOGS: dict[tuple[object, ...], LoraCatalog] = {}


def parse_lora(flag: str, text: str) -> tuple[str, float | None]:
    """``NAME`` or ``NAME:SCALE`` -> (name, scale or None for the LoRA's default)."""
    match = _LORA_RE.match(text.strip())
    if not match:
        raise InvalidRequest(messages.bad_value(flag, "NAME or NAME:SCALE like detail:0.8", text))
    return match.group(1), float(match.group(2)) if match.group(2) is not None else None


def resolve(
    settings: Settings, model: str, prompt: str, negative: str, given: Sequence[str],
    style_name: str, no_trigger: bool,
) -> Styled:  # fmt: skip
    """The request's LoRAs (a style's first, then ``--lora``s, which win for the same name)
    and its text: the style's template around the prompt, then the trigger words."""
    style = _style(settings, style_name)
    catalog = catalog_for(settings)
    chosen: dict[str, float] = {}
    for text in style.loras if style else ():
        name, scale = parse_lora(f"style {style_name}", text)
        entry = _entry(catalog, settings, model, name)
        chosen[entry.name] = entry.default_scale if scale is None else scale
    mine: set[str] = set()
    for text in given:
        name, scale = parse_lora("--lora", text)
        entry = _entry(catalog, settings, model, name)
        if entry.name in mine:
            raise InvalidRequest(messages.lora_twice(entry.name))
        mine.add(entry.name)
        chosen[entry.name] = entry.default_scale if scale is None else scale
    limit, high = settings.limits.max_loras, settings.limits.max_lora_scale
    if len(chosen) > limit:
        raise InvalidRequest(messages.too_many_loras(len(chosen), limit))
    for name, scale in chosen.items():
        if not -high <= scale <= high:
            raise InvalidRequest(messages.lora_scale_range(name, scale, high))
    text, negative_text = prompt, negative
    if style is not None:
        text = style.prompt.replace("{prompt}", prompt) if "{prompt}" in style.prompt else f"{prompt}, {style.prompt}"
        negative_text = ", ".join(part for part in (negative, style.negative) if part)
    if not no_trigger:
        words = [w for name in chosen for w in catalog.get(name).trigger  # type: ignore[union-attr]
                 if w.casefold() not in text.casefold()]  # fmt: skip
        text = ", ".join([text, *dict.fromkeys(words)]) if words else text
    return Styled(tuple(chosen.items()), text, negative_text, style.steps if style else None,
                  style.cfg if style else None)  # fmt: skip


def _style(settings: Settings, name: str) -> StyleSpec | None:
    if not name:
        return None
    if name in settings.styles:
        return settings.styles[name]
    folded = [s for n, s in settings.styles.items() if n.casefold() == name.casefold()]
    if len(folded) == 1:
        return folded[0]
    raise InvalidRequest(messages.unknown_style(name, settings.styles))


def _entry(catalog: LoraCatalog, settings: Settings, model: str, name: str) -> LoraEntry:
    entry = catalog.resolve(name)
    if entry is None:
        raise InvalidRequest(messages.lora_unknown(name, catalog.nearest(name)))
    if entry.broken:
        raise InvalidRequest(messages.lora_broken(entry.name, entry.broken))
    if entry.model is not None and entry.model != model:
        raise InvalidRequest(messages.lora_other_model(entry.name, entry.model, model))
    family = model_family(settings, model)
    if not entry.applies_to(model, family):
        raise InvalidRequest(messages.lora_wrong_family(entry.name, entry.family or "?", model, family or "?"))
    return entry


def model_family(settings: Settings, model: str) -> str | None:
    """A model's family as configured (None for "auto": the bot does not open the model)."""
    family = settings.models[model].family
    return None if family == "auto" else family


def lora_names(settings: Settings, model: str) -> list[str]:
    """The LoRA names usable with ``model`` (Discord's autocomplete, the web's list)."""
    return [e.name for e in catalog_for(settings).for_model(model, model_family(settings, model))]


def style_names(settings: Settings) -> list[str]:
    return sorted(settings.styles)


def listing(settings: Settings, model: str) -> str:
    """The ``/loras`` reply: each usable LoRA with its default scale and trigger words, and
    the styles."""
    entries = catalog_for(settings).for_model(model, model_family(settings, model))
    if not entries and not settings.styles:
        return messages.no_loras_listed(model)
    loras = [_line(e) for e in entries] or ["(none)"]
    styles = [f"`{name}`" + (f": {spec.description}" if spec.description else "")
              for name, spec in sorted(settings.styles.items())]  # fmt: skip
    return messages.loras_listing(model, loras, styles)


def _line(entry: LoraEntry) -> str:
    parts = [f"`{entry.name}` (default {messages.number(entry.default_scale)})"]
    if entry.trigger:
        parts.append("trigger: " + ", ".join(entry.trigger))
    if entry.description:
        parts.append(entry.description)
    return " - ".join(parts)

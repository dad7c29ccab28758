"""``/help`` and ``/loras`` (``request.LISTINGS``): what one model takes, as chat text and data.

Discord, Slack and the web answer a listing with ``answer`` (the web's ``GET /api/NAME`` adds
``data``); Discord's autocomplete asks ``samplers_for`` and ``takes``. What is listed is what
``commands.build_request`` accepts for the model, from the same facts: its family's samplers
(``model_families``, ``generation/loop/samplers.py``), what ``--cfg`` means for it (nothing for
Flux schnell, distilled guidance for Flux dev), ``--no`` only where it runs a negative pass,
``/depth`` only with a depth ControlNet (``commands.refusal``), and its LoRAs and the styles.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from gouache import messages
from gouache.bot.commands import _SHOWN_FLAGS, refusal
from gouache.bot.loras import catalog_for, listing, lora_names, model_family, style_names
from gouache.config import Settings
from gouache.model_families import facts_for
from gouache.request import KINDS, LISTINGS, Kind, Listing

__all__ = ["ModelOptions", "answer", "data", "model_options", "samplers_for", "takes"]


@dataclass(frozen=True)
class ModelOptions:
    """The commands and options one model takes, with its defaults."""

    model: str
    label: str
    family: str | None  # None: a hub id with family "auto" (the worker reads it at load)
    commands: tuple[str, ...]  # "/imagine", ... and the listings
    flags: tuple[str, ...]  # "--steps", ... (those of commands._SHOWN_FLAGS that apply)
    samplers: tuple[str, ...]
    guidance: str  # model_families.GuidanceKind: "cfg", "distilled" or "none"
    negative_prompt: bool
    steps: int
    cfg: float
    sampler: str
    size: str  # "WxH"
    loras: tuple[str, ...]
    styles: tuple[str, ...]


def samplers_for(settings: Settings, model: str) -> tuple[str, ...]:
    """The samplers ``model``'s family takes; every sampler for an unknown model or family."""
    # Imported here, as in bot/commands: the table's module must stay out of `import gouache.bot`.
    from gouache.generation.loop.samplers import SAMPLERS, samplers_of_kind

    spec = settings.models.get(model)
    facts = facts_for(spec.path, spec.family) if spec is not None else None
    return samplers_of_kind(facts.sampler_kind) if facts is not None else SAMPLERS


def takes(settings: Settings, model: str, kind: Kind) -> bool:
    """Whether ``model`` runs command ``kind`` (/depth needs a depth ControlNet)."""
    spec = settings.models.get(model)
    return spec is not None and refusal(kind, model, spec) is None


def model_options(settings: Settings, model: str) -> ModelOptions:
    """What ``model`` (a configured name) takes."""
    spec = settings.models[model]
    facts = facts_for(spec.path, spec.family)
    kinds = [kind for kind in KINDS if takes(settings, model, kind)]
    guidance = facts.guidance if facts is not None else "cfg"
    negative = facts.negative_prompt if facts is not None else True
    loras, styles = tuple(lora_names(settings, model)), tuple(style_names(settings))
    dropped = {"--cfg"} if guidance == "none" else set()
    dropped |= set() if negative else {"--no"}
    dropped |= set() if Kind.DEPTH in kinds else {"--input"}
    dropped |= set() if loras else {"--lora", "--no-trigger"}
    dropped |= set() if styles else {"--style"}
    return ModelOptions(
        model=model, label=spec.label, family=facts.name if facts is not None else None,
        commands=(*(f"/{kind.value}" for kind in kinds), *(f"/{item.value}" for item in LISTINGS)),
        flags=tuple(flag for flag in _SHOWN_FLAGS if flag not in dropped),
        samplers=samplers_for(settings, model), guidance=guidance, negative_prompt=negative,
        steps=min(spec.default_steps, settings.limits.max_steps), cfg=spec.default_guidance,
        sampler=spec.default_sampler, size=f"{spec.default_width}x{spec.default_height}",
        loras=loras, styles=styles,
    )  # fmt: skip


def answer(item: Listing, settings: Settings, model: str) -> str:
    """The chat text of listing ``item`` for ``model`` (Discord Markdown; Slack converts)."""
    if item is Listing.LORAS:
        return listing(settings, model)
    options = model_options(settings, model)
    summaries = {f"/{kind.value}": spec.summary for kind, spec in KINDS.items()}
    summaries |= {f"/{name.value}": spec.summary for name, spec in LISTINGS.items()}
    limits = settings.limits
    return messages.model_help(
        model=model, label=options.label, family=options.family,
        commands=[(name, summaries[name]) for name in options.commands],
        steps=options.steps, max_steps=limits.max_steps, guidance=options.guidance,
        cfg=options.cfg, max_cfg=limits.max_guidance, samplers=options.samplers,
        sampler=options.sampler, negative=options.negative_prompt,
        depth="/depth" in options.commands, size=options.size, max_images=limits.max_images,
        loras=options.loras, styles=options.styles, models=settings.models,
    )  # fmt: skip


def data(item: Listing, settings: Settings, model: str) -> dict[str, Any]:
    """The web's ``GET /api/NAME`` body: the listing as data, and ``text`` as chat shows it."""
    if item is Listing.HELP:
        return {"listing": item.value, **asdict(model_options(settings, model)),
                "text": answer(item, settings, model)}  # fmt: skip
    entries = catalog_for(settings).for_model(model, model_family(settings, model))
    return {
        "listing": item.value, "model": model,
        "loras": [{"name": e.name, "default_scale": e.default_scale, "trigger": list(e.trigger),
                   "description": e.description} for e in entries],
        "styles": [{"name": name, "description": spec.description}
                   for name, spec in sorted(settings.styles.items())],
        "text": answer(item, settings, model),
    }  # fmt: skip

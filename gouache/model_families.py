"""What the bot knows of each model family without torch: defaults, samplers, guidance.

The worker's ``generation/families/`` run the models; the bot process must not import torch or
diffusers, yet it fills a request's defaults, refuses a sampler the model cannot use and says
what ``--cfg`` means for it. So the facts it needs live here, read from the model's
configured ``family = ...`` or, for a local folder, its ``model_index.json`` ``_class_name``
(``tests/unit/generation/test_families_facts.py`` holds this table to the families').
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["FAMILY_NAMES", "FamilyFacts", "GuidanceKind", "facts_for", "facts_named", "family_of_pipeline"]

GuidanceKind = Literal["cfg", "distilled", "none"]


@dataclass(frozen=True)
class FamilyFacts:
    """One family (or one variant of it, such as Flux schnell) as the bot sees it."""

    name: str
    sampler_kind: str  # "eps" (noise-prediction UNets) or "flow" (flow-matching transformers)
    guidance: GuidanceKind  # what --cfg means: real CFG, a distilled embedding, or nothing
    steps: int
    cfg: float
    sampler: str
    negative_prompt: bool = True  # whether --no is used (not without CFG rows)


_SD = FamilyFacts("sd", "eps", "cfg", 30, 7.0, "euler-a")
_SDXL = FamilyFacts("sdxl", "eps", "cfg", 30, 7.0, "euler-a")
_FLUX_DEV = FamilyFacts("flux", "flow", "distilled", 28, 3.5, "flow-euler", negative_prompt=False)
_FLUX_SCHNELL = FamilyFacts("flux", "flow", "none", 4, 0.0, "flow-euler", negative_prompt=False)
# Flux.2 Klein: the step-distilled checkpoints (FLUX.2-klein-4B/9B) take 4 steps and no
# guidance; the base ones (FLUX.2-klein-base-*) real CFG 4.0 over 50 steps (the pipeline's).
_KLEIN = FamilyFacts("flux2-klein", "flow", "none", 4, 1.0, "flow-euler", negative_prompt=False)
_KLEIN_BASE = FamilyFacts("flux2-klein", "flow", "cfg", 50, 4.0, "flow-euler")
_SD3 = FamilyFacts("sd3", "flow", "cfg", 28, 4.5, "flow-euler")
_Z_IMAGE_TURBO = FamilyFacts("z-image", "flow", "cfg", 8, 0.0, "flow-euler")  # CFG off

_PIPELINES: dict[str, FamilyFacts] = {
    "StableDiffusionPipeline": _SD,
    "StableDiffusionImg2ImgPipeline": _SD,
    "StableDiffusionControlNetPipeline": _SD,
    "LatentConsistencyModelPipeline": _SD,
    "StableDiffusionXLPipeline": _SDXL,
    "StableDiffusionXLImg2ImgPipeline": _SDXL,
    "StableDiffusionXLControlNetPipeline": _SDXL,
    "FluxPipeline": _FLUX_DEV,
    "Flux2KleinPipeline": _KLEIN,
    "StableDiffusion3Pipeline": _SD3,
    "ZImagePipeline": _Z_IMAGE_TURBO,
}
_NAMED = {facts.name: facts for facts in _PIPELINES.values()}
FAMILY_NAMES: tuple[str, ...] = tuple(_NAMED)


def family_of_pipeline(pipeline: str) -> str | None:
    """The family a ``model_index.json`` ``_class_name`` belongs to (None: not one of ours)."""
    facts = _PIPELINES.get(pipeline)
    return facts.name if facts else None


def facts_named(name: str, path: str = "") -> FamilyFacts:
    """The facts of family ``name``; for Flux, schnell's when the folder or name says so; for
    Klein, the base model's when the folder (``is_distilled``) or name says so."""
    facts = _NAMED[name]
    if facts.name == "flux" and _is_schnell(path):
        return _FLUX_SCHNELL
    if facts.name == "flux2-klein" and not _is_distilled(path):
        return _KLEIN_BASE
    return facts


def facts_for(path: str, configured: str = "auto") -> FamilyFacts | None:
    """A model's facts from its configured family, else its local folder's pipeline class.

    None when neither says (a hub id with ``family = "auto"``): the worker still knows, and
    refuses what the model cannot do when it loads it.
    """
    if configured != "auto":
        return facts_named(configured, path)
    index = _read_json(Path(path, "model_index.json"))
    facts = _PIPELINES.get(str(index.get("_class_name", ""))) if index else None
    return facts_named(facts.name, path) if facts else None


def _is_schnell(path: str) -> bool:
    """Flux schnell has no guidance embedding (``transformer/config.json``)."""
    config = _read_json(Path(path, "transformer", "config.json"))
    if config is not None:
        return not config.get("guidance_embeds", True)
    return "schnell" in path.casefold()


def _is_distilled(path: str) -> bool:
    """Flux.2 Klein's step-distilled checkpoints say so in ``model_index.json`` (the pipeline's
    ``is_distilled``); without the file, the hub names them FLUX.2-klein-*, the others *-base-*."""
    index = _read_json(Path(path, "model_index.json"))
    if index is not None:
        return bool(index.get("is_distilled", False))
    return "base" not in Path(path).name.casefold()


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None

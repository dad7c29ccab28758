"""Model families, one module each; ``family_for`` picks a model's from its ``model_index.json``.

The family is read from the pipeline class the folder was saved with (``_class_name``) or the
configured ``family = ...``; it is never guessed from which parts exist (a Flux or SD3 folder
also has a ``text_encoder_2``). Adding a family: a module here with a ``Family`` subclass, its
row in ``FAMILIES``, its tiny components for tests, and a parity test (docs/architecture.md).
"""

from __future__ import annotations

from typing import Any

from gouache import messages
from gouache.errors import InvalidRequest
from gouache.generation.families.base import Family, Rows
from gouache.generation.families.flux import Flux
from gouache.generation.families.flux2_klein import Flux2Klein
from gouache.generation.families.sd import SD
from gouache.generation.families.sd3 import SD3
from gouache.generation.families.sdxl import SDXL
from gouache.generation.families.z_image import ZImage

__all__ = ["FAMILIES", "Family", "Rows", "family_for", "family_named"]

FAMILIES: dict[str, Family] = {family.name: family for family in (SD(), SDXL(), Flux(), Flux2Klein(), SD3(), ZImage())}
_BY_PIPELINE = {cls: family for family in FAMILIES.values() for cls in family.pipeline_classes}


def family_named(name: str) -> Family:
    """The family called ``name`` (a configured ``family = ...``)."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise InvalidRequest(messages.unknown_family(name, sorted(FAMILIES))) from None


def family_for(model: str, index: dict[str, Any], configured: str = "auto") -> Family:
    """The family of a model folder: the configured one, else its pipeline class's."""
    if configured != "auto":
        return family_named(configured)
    pipeline = str(index.get("_class_name", ""))
    try:
        return _BY_PIPELINE[pipeline]
    except KeyError:
        raise InvalidRequest(messages.unknown_pipeline_class(model, pipeline, sorted(_BY_PIPELINE))) from None

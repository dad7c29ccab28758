"""Results out: PNG bytes carrying A1111-style ``parameters`` text (how the image was made)."""

from __future__ import annotations

import io
from typing import Protocol

from PIL import Image, PngImagePlugin

from gouache import messages

__all__ = ["ParameterFields", "encode_png", "png_parameters"]


def encode_png(image: Image.Image, parameters: str | None = None) -> bytes:
    """PNG bytes; ``parameters`` goes in a ``parameters`` text chunk like A1111 writes.

    Latin-1 text becomes ``tEXt``; anything else (emoji, CJK prompts) an ``iTXt`` chunk, which
    Pillow chooses on its own and A1111-compatible readers accept.
    """
    info = None
    if parameters is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", parameters.replace("\x00", ""))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


class ParameterFields(Protocol):
    """The request fields that describe how an image was made (``Request`` has them all)."""

    @property
    def prompt(self) -> str: ...

    @property
    def negative_prompt(self) -> str: ...

    @property
    def steps(self) -> int: ...

    @property
    def sampler(self) -> str: ...

    @property
    def guidance(self) -> float: ...

    @property
    def seed(self) -> int: ...

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...

    @property
    def model(self) -> str: ...

    @property
    def guidance_kind(self) -> str: ...  # what --cfg meant: "cfg", "distilled" or "none"


def png_parameters(fields: ParameterFields, *, seed: int | None = None) -> str:
    """The A1111 ``parameters`` text, so other tools can read how an image was made.

    ``seed`` overrides ``fields.seed`` for the n-th image of a batch. The guidance is named
    for what it was: ``CFG scale: 7``, ``Distilled guidance: 3.5`` (Flux dev) or
    ``Guidance: none`` (Flux schnell).
    """
    guidance = messages.guidance_parameter(fields.guidance_kind, fields.guidance)
    lines = [fields.prompt]
    if fields.negative_prompt:
        lines.append(f"Negative prompt: {fields.negative_prompt}")
    lines.append(
        f"Steps: {fields.steps}, Sampler: {fields.sampler}, {guidance}, "
        f"Seed: {fields.seed if seed is None else seed}, "
        f"Size: {fields.width}x{fields.height}, Model: {fields.model}"
    )
    return "\n".join(lines)

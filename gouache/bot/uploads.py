"""Files that come with a command: which commands take one, how big, and of what type.

Every platform delivers uploads differently (a Discord attachment option, a file on a Slack
message, a multipart part); the rules are the same: ``request.KINDS`` says which commands take
a depth map (/depth, required) and which an image to start from (/imagine optional: a remix;
/upscale and /edit required), and only those take a file;
the size is capped before the bytes are read where the platform says the size first, and the
type comes from the bytes themselves, never from the user's filename.

Admission reads the upload with the worker's own code (``generation.depth.read_upload``:
header checks, decode, depth-map-or-photo, normalisation), so a file the worker would refuse
is refused here, before a rate token is spent. Only depth estimation (a model) is left to
the worker. This is also where the output's size is fixed for a /depth request without
``--ar``/``--size`` (``Request.size_from_upload``): the request's default area at the upload's
aspect (``commands.size_for_upload``), with a note saying so. An image to start from goes
through the same checks and decoder (``read_image``); a remix without --ar/--size gets the
image's aspect the same way, and /upscale's output is the image's size times --scale.
"""

from __future__ import annotations

from dataclasses import replace

from gouache import messages
from gouache.bot.commands import size_for_upload
from gouache.config import Limits
from gouache.errors import InvalidRequest, TooLarge
from gouache.request import KINDS, UPSCALE_SCALE, Kind, Request
from gouache.storage.jobs import Artifact, ArtifactKind

__all__ = ["check_size", "sniff_upload", "attach", "takes_file"]

_TYPES = (
    (b"\x89PNG\r\n\x1a\n", "image/png", "png"),
    (b"\xff\xd8\xff", "image/jpeg", "jpg"),
    (b"\x93NUMPY", "application/x-npy", "npy"),
)


def takes_file(kind: Kind) -> bool:
    """Whether a command takes an upload (the one answer every platform asks for)."""
    return KINDS[kind].takes_file


def _takes_files() -> list[str]:
    return [f"/{kind.value}" for kind in KINDS if takes_file(kind)]


def check_size(size: int, limits: Limits) -> None:
    if size > limits.max_upload_bytes:
        raise TooLarge(messages.upload_too_large(size, limits.max_upload_bytes))


def sniff_upload(data: bytes) -> tuple[str, str]:
    """(mime, extension) from the bytes themselves; the client's filename is never used."""
    for magic, mime, ext in _TYPES:
        if data.startswith(magic):
            return mime, ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp", "webp"
    from gouache.generation.inputs.uploads import inspect_upload

    inspect_upload(data, max_bytes=len(data) + 1, max_pixels=2**62)  # a specific message
    raise InvalidRequest(messages.UNREADABLE_UPLOAD)


def attach(request: Request, data: bytes | None, limits: Limits) -> tuple[Request, list[Artifact]]:
    """Pair a request with its upload, as ``KINDS`` says: a depth map for /depth, an image to
    start from for /imagine (optional), /upscale and /edit; the others take none."""
    spec = request.spec
    if data is None:
        if spec.depth_map == "required":
            raise InvalidRequest(messages.upload_needed(request.kind.value))
        if spec.image == "required":
            raise InvalidRequest(messages.image_needed(request.kind.value))
        if request.denoise and spec.image != "none":
            raise InvalidRequest(messages.strength_needs_image())
        return request, []
    if not spec.takes_file:
        raise InvalidRequest(messages.no_file_here(request.kind.value, _takes_files()))
    check_size(len(data), limits)
    if spec.image != "none":
        return attach_image(request, data, limits)
    from gouache.generation.inputs.uploads import read_upload  # numpy + Pillow only, no models

    upload = read_upload(
        data, max_bytes=limits.max_upload_bytes, max_pixels=limits.max_upload_pixels,
        input_mode=request.depth_input,
    )  # fmt: skip
    mime, ext = sniff_upload(data)
    name = f"input-0.{ext}"
    notes = list(request.notes)
    if request.depth_input == "auto":
        say = messages.depth_map_used if upload.kind == "depth" else messages.photo_used
        notes.append(say(upload.reason))
    notes.extend(upload.notes)
    width, height = request.width, request.height
    up_w, up_h = upload.header.width, upload.header.height
    if request.size_from_upload:
        width, height = size_for_upload(up_w, up_h, request.width * request.height, limits)
        if (width, height) != (request.width, request.height):
            notes.append(messages.size_from_upload(width, height, up_w, up_h))
    from gouache.generation.inputs.uploads import padded_fraction

    if padded_fraction((up_h, up_w), width, height) > 0.02:
        notes.append(messages.depth_padded(up_w, up_h, width, height))
    updated = replace(request, attachment=name, width=width, height=height,
                      size_from_upload=False, notes=tuple(notes))  # fmt: skip
    return updated, [Artifact("", name, ArtifactKind.INPUT, mime, data)]


def attach_image(request: Request, data: bytes, limits: Limits) -> tuple[Request, list[Artifact]]:
    """An image to start from: read as the worker will, the output size fixed (the image's
    aspect for a remix without --ar/--size; its size times --scale for /upscale), and for
    /upscale without a prompt, the prompt our own PNG recorded."""
    from gouache.generation.inputs.uploads import made_with, read_image
    from gouache.generation.upscale import tile_boxes, tile_overlap

    image = read_image(data, max_bytes=limits.max_upload_bytes, max_pixels=limits.max_upload_pixels)
    mime, ext = sniff_upload(data)
    name = f"input-0.{ext}"
    up_w, up_h = image.size
    notes = list(request.notes)
    width, height, tile = request.width, request.height, 0
    prompt, negative = request.prompt, request.negative_prompt
    if request.kind is Kind.UPSCALE:
        scale = request.scale or UPSCALE_SCALE
        width, height = _snap(up_w * scale), _snap(up_h * scale)
        if max(width, height) > limits.max_side or width * height > limits.max_pixels:
            raise InvalidRequest(messages.upscale_too_large(width, height, limits.max_side, limits.max_pixels))
        recorded = made_with(data)
        if not prompt and recorded is not None:
            prompt, negative = recorded[0], negative or recorded[1]
        tile = request.tile if max(width, height) > request.tile else 0
        tiles = len(tile_boxes(width, height, tile, tile_overlap(tile))) if tile else 0
        notes.append(messages.upscaled_from(up_w, up_h, width, height, request.image_strength, tiles))
    else:
        if request.size_from_upload:
            width, height = size_for_upload(up_w, up_h, request.width * request.height, limits)
        notes.append(messages.remix_used(width, height, request.image_strength))
    updated = replace(request, attachment=name, width=width, height=height, prompt=prompt,
                      negative_prompt=negative, size_from_upload=False, notes=tuple(notes),
                      tile=tile)  # fmt: skip
    return updated, [Artifact("", name, ArtifactKind.INPUT, mime, data)]


def _snap(value: float) -> int:
    return max(8, int(value + 4) // 8 * 8)

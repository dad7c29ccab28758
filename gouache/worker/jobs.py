"""Requests in, files out: the translation the worker and `gouache generate` share.

A ``Request`` becomes one engine ``BatchItem`` (its seed, prompts, images per request and,
for ``/depth``, the control image made from its upload: decoded by ``depth.read_upload``,
a depth map normalised or a photo's depth estimated by the model's estimator, fitted to the
output size without stretching); an engine ``ItemResult`` becomes the artifacts a user
receives: PNGs whose ``parameters`` chunk records how they were made, the denoising GIFs when
asked for, the /diversity report, and for /depth the depth map used (``ArtifactKind.DEPTH``,
``depth.png``, no ``index``: one per job, since every image of the job followed the one map).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from gouache import messages
from gouache.config import GifSettings, Limits
from gouache.errors import InvalidRequest
from gouache.generation.loop.batch import BatchItem, BatchKey, ItemResult, LaneSpec, ShapeKey
from gouache.request import Request
from gouache.storage.jobs import Artifact, ArtifactKind

if TYPE_CHECKING:
    from PIL.Image import Image

    from gouache.generation.inputs.uploads import DepthEstimatorLike

__all__ = ["batch_key_for", "shape_of", "lane_spec", "item_for", "prepare_depth", "start_image", "artifacts_for", "image_parameters",
           "EstimatorLookup", "frames_every", "Made", "depth_artifact"]  # fmt: skip

# The model's depth estimator, or None (EstimatorRegistry.get); loaded only if a photo needs it.
EstimatorLookup = Callable[[str], "DepthEstimatorLike | None"]


def batch_key_for(request: Request) -> BatchKey:
    return BatchKey(
        model=request.model,
        pipeline=request.pipeline,
        width=request.width,
        height=request.height,
        steps=request.steps,
        sampler=request.sampler,
        guidance=request.guidance,
        diversify=request.diversify,
        denoise=request.image_strength if request.from_image else 1.0,
    )


def shape_of(request: Request) -> ShapeKey:
    """What lanes must share to take one denoiser call: model and latent size."""
    return request.shape


def lane_spec(request: Request) -> LaneSpec:
    """The per-lane settings of a request (everything the shape key leaves out)."""
    return LaneSpec(request.steps, request.sampler, request.guidance, request.pipeline,
                    request.diversify, request.image_strength if request.from_image else 1.0)  # fmt: skip


def item_for(
    item_id: str,
    request: Request,
    inputs: Sequence[Artifact],
    limits: Limits,
    gif: GifSettings,
    estimators: EstimatorLookup | None = None,
) -> BatchItem:
    """The engine's view of one request; for /depth the control image is made here
    (``prepare_depth``: the depth map used, at the output size). Raises ``UserError`` for an
    upload that cannot be used. The notes on how the upload was read were given at admission
    (``bot/uploads.attach`` runs the same ``read_upload``)."""
    control = None
    if request.pipeline == "depth":
        depth, _notes = prepare_depth(request, inputs, limits, estimators)
        from gouache.generation.inputs.uploads import depth_to_image

        control = depth_to_image(depth).convert("RGB")
    init = start_image(request, inputs, limits) if request.from_image else None
    return BatchItem(
        item_id=item_id,
        prompt=request.text,
        negative_prompt=request.negative_text,
        seed=request.seed,
        count=request.count,
        control_image=control,
        frames_every=frames_every(request, gif),
        control_scale=request.strength,
        init_image=init,
        loras=request.loras,
    )


def start_image(request: Request, inputs: Sequence[Artifact], limits: Limits) -> Image:
    """The image an image-to-image request starts from, at its output size: read by the same
    hostile-input reader admission used, then resized (for /upscale, this is the upscale of
    the pixels that the img2img pass then redraws)."""
    from PIL import Image as PILImage

    from gouache.generation.inputs.uploads import read_image

    upload = next((a for a in inputs if a.kind is ArtifactKind.INPUT), None)
    if upload is None:
        raise InvalidRequest(messages.image_needed(request.kind.value))
    image = read_image(upload.data, max_bytes=limits.max_upload_bytes, max_pixels=limits.max_upload_pixels)
    if image.size == (request.width, request.height):
        return image
    return image.resize((request.width, request.height), PILImage.Resampling.LANCZOS)


def prepare_depth(
    request: Request,
    inputs: Sequence[Artifact],
    limits: Limits,
    estimators: EstimatorLookup | None,
) -> tuple[np.ndarray, list[str]]:
    """The depth map a /depth request generates from, at its output size (near = bright)."""
    from gouache.generation.inputs.uploads import (
        fit_depth,
        padded_fraction,
        read_upload,
        resolve_depth,
    )

    upload_artifact = next((a for a in inputs if a.kind is ArtifactKind.INPUT), None)
    if upload_artifact is None:
        raise InvalidRequest(messages.upload_needed(request.kind.value))
    upload = read_upload(
        upload_artifact.data, max_bytes=limits.max_upload_bytes,
        max_pixels=limits.max_upload_pixels, input_mode=request.depth_input,
        filename=upload_artifact.name,
    )  # fmt: skip
    depth, notes = resolve_depth(
        upload, lambda: estimators(request.model) if estimators is not None else None
    )
    if request.depth_input == "auto":
        say = messages.depth_map_used if upload.kind == "depth" else messages.photo_used
        notes.insert(0, say(upload.reason))
    if padded_fraction(depth.shape, request.width, request.height) > 0.02:
        h, w = depth.shape
        notes.append(messages.depth_padded(w, h, request.width, request.height))
    return fit_depth(depth, request.width, request.height), notes


def frames_every(request: Request, gif: GifSettings) -> int:
    if request.process:  # the process strip labels about 8 denoising frames by their timestep
        return max(1, request.steps // 8)
    return gif.every if request.gif else 0


def image_parameters(request: Request, index: int, made: Made | None = None) -> str:
    """A1111-style ``parameters`` text: the seed (and prompt) this very image used."""
    from gouache.generation.png import png_parameters

    prompt, seed = request.text, request.image_seed(index)
    if made is not None and index < len(made.seeds):
        prompt, seed = made.prompts[index], made.seeds[index]
    tags = [f"<lora:{name}:{scale:g}>" for name, scale in request.loras]  # A1111's form
    shown = replace(request, prompt=" ".join([prompt, *tags]), negative_prompt=request.negative_text)
    text = png_parameters(shown, seed=seed)
    return f"{text}, Style: {request.style}" if request.style else text


@dataclass(frozen=True)
class Made:
    """How each image of an enlarged /diversity set was made (prompt variants change both)."""

    prompts: tuple[str, ...]
    seeds: tuple[int, ...]


def artifacts_for(
    job_id: str,
    request: Request,
    result: ItemResult,
    gif: GifSettings,
    report: Mapping[str, Any] | None = None,
    composite: bytes | None = None,
    made: Made | None = None,
    depth: Image | None = None,
) -> list[Artifact]:
    """PNG per image (with its parameters), a GIF per image when frames were kept, a report
    (JSON, its ``summary`` the text block), the report's composite picture, and for /depth the
    depth map used (``depth``: the item's control image), once: every image followed it."""
    from gouache.generation.gif import encode_gif
    from gouache.generation.png import encode_png

    out: list[Artifact] = []
    for index, image in enumerate(result.images):
        data = encode_png(image, image_parameters(request, index, made))
        out.append(Artifact(job_id, f"image-{index}.png", ArtifactKind.IMAGE, "image/png", data, index))
    for index, frames in enumerate(result.frames):
        if not frames or (request.process and not request.gif):  # --process has its own GIF
            continue
        data = encode_gif(frames, max_bytes=gif.max_bytes, frame_ms=gif.frame_ms, hold_ms=gif.hold_ms)
        out.append(Artifact(job_id, f"denoise-{index}.gif", ArtifactKind.GIF, "image/gif", data, index))
    if depth is not None and result.images:
        out.append(depth_artifact(job_id, request, depth))
    if report is not None:
        data = json.dumps(report, indent=2, sort_keys=True).encode()
        out.append(Artifact(job_id, "report.json", ArtifactKind.REPORT, "application/json", data))
    if composite is not None:
        out.append(Artifact(job_id, "report.png", ArtifactKind.COMPOSITE, "image/png", composite))
    return out


def depth_artifact(job_id: str, request: Request, depth: Image) -> Artifact:
    """``depth.png``: the depth map a /depth job's images followed (its control image, 8-bit
    grey, near = bright), one per job whatever its image count or sweep cells; no ``index``."""
    from gouache.generation.png import encode_png

    data = encode_png(depth.convert("L"), f"Depth map used for: {request.prompt}")
    return Artifact(job_id, "depth.png", ArtifactKind.DEPTH, "image/png", data)

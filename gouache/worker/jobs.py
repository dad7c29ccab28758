"""Requests in, files out: the translation the worker and `gouache generate` share.

A ``Request`` becomes one engine ``BatchItem`` (its seed, prompts, images per request and,
for ``/depth``, the control image decoded from its upload); an engine ``ItemResult`` becomes
the artifacts a user receives: PNGs whose ``parameters`` chunk records how they were made,
the denoising GIFs when asked for, and the /diversity report.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from gouache.config import GifSettings, Limits
from gouache.errors import InvalidRequest
from gouache.generation.batch import BatchItem, BatchKey, ItemResult
from gouache.request import Request
from gouache.storage.jobs import Artifact, ArtifactKind

__all__ = ["batch_key_for", "item_for", "artifacts_for", "image_parameters", "sweep_artifacts",
           "frames_every", "Made"]


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
    )


def item_for(
    item_id: str, request: Request, inputs: Sequence[Artifact], limits: Limits, gif: GifSettings
) -> BatchItem:
    """The engine's view of one request; decodes a /depth upload into its control image."""
    control = None
    if request.pipeline == "depth":
        from gouache.generation.depth import depth_to_control_image, load_depth_map

        upload = next((a for a in inputs if a.kind is ArtifactKind.INPUT), None)
        if upload is None:
            raise InvalidRequest(f"/{request.kind.value} needs a depth map (PNG or .npy) attached to the command")
        depth = load_depth_map(
            upload.data, upload.name, max_bytes=limits.max_upload_bytes, max_pixels=limits.max_upload_pixels
        )
        control = depth_to_control_image(depth, request.width, request.height)
    return BatchItem(
        item_id=item_id,
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        seed=request.seed,
        count=request.count,
        control_image=control,
        frames_every=frames_every(request, gif),
    )


def frames_every(request: Request, gif: GifSettings) -> int:
    if request.process:  # the process strip labels about 8 denoising frames by their timestep
        return max(1, request.steps // 8)
    return gif.every if request.gif else 0


def image_parameters(request: Request, index: int, made: Made | None = None) -> str:
    """A1111-style ``parameters`` text: the seed (and prompt) this very image used."""
    from gouache.generation.images import png_parameters

    if made is not None and index < len(made.seeds):
        return png_parameters(replace(request, prompt=made.prompts[index]), seed=made.seeds[index])
    return png_parameters(request, seed=request.image_seed(index))


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
) -> list[Artifact]:
    """PNG per image (with its parameters), a GIF per image when frames were kept, a report
    (JSON, its ``summary`` the text block) and the report's composite picture."""
    from gouache.generation.gif import encode_gif
    from gouache.generation.images import encode_png

    out: list[Artifact] = []
    for index, image in enumerate(result.images):
        data = encode_png(image, image_parameters(request, index, made))
        out.append(Artifact(job_id, f"image-{index}.png", ArtifactKind.IMAGE, "image/png", data, index))
    for index, frames in enumerate(result.frames):
        if not frames or (request.process and not request.gif):  # --process has its own GIF
            continue
        data = encode_gif(frames, max_bytes=gif.max_bytes, frame_ms=gif.frame_ms, hold_ms=gif.hold_ms)
        out.append(Artifact(job_id, f"denoise-{index}.gif", ArtifactKind.GIF, "image/gif", data, index))
    if report is not None:
        data = json.dumps(report, indent=2, sort_keys=True).encode()
        out.append(Artifact(job_id, "report.json", ArtifactKind.REPORT, "application/json", data))
    if composite is not None:
        out.append(Artifact(job_id, "report.png", ArtifactKind.COMPOSITE, "image/png", composite))
    return out


def sweep_artifacts(job_id: str, request: Request, cells: Sequence[Any], result: ItemResult) -> list[Artifact]:
    """The labelled grid (``grid.png``, no index) first, then every cell as ``image-k.png``
    with the parameters of that cell made on its own (``cells`` from ``worker/sweeps.py``)."""
    from gouache.generation.images import encode_png, png_parameters
    from gouache.worker.sweeps import sweep_grid

    out = [Artifact(job_id, "grid.png", ArtifactKind.IMAGE, "image/png",
                    encode_png(sweep_grid(request, result.images), sweep_description(request)))]  # fmt: skip
    for cell, image in zip(cells, result.images, strict=True):
        data = encode_png(image, png_parameters(cell.request))
        out.append(Artifact(job_id, f"image-{cell.index}.png", ArtifactKind.IMAGE, "image/png", data, cell.index))
    return out


def sweep_description(request: Request) -> str:
    """The grid's ``parameters`` text: the base parameters and the axes."""
    from gouache.generation.images import png_parameters

    axes = "; ".join(f"{axis}={','.join(values)}" for axis, values in request.sweep)
    return f"{png_parameters(request)}\nSweep: {axes}"

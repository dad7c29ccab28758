"""`gouache generate`: one command straight through the engine, no queue, files on disk."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from gouache import messages
from gouache.bot.commands import build_request, parse_text
from gouache.bot.prompt_length import prompt_length_checker
from gouache.bot.uploads import attach
from gouache.config import Settings
from gouache.errors import InvalidRequest
from gouache.request import KINDS, Origin
from gouache.storage.jobs import ArtifactKind
from gouache.worker.experiments import (
    experiment_job,
    is_experiment,
    loaded_model,
    process_artifacts,
)
from gouache.worker.jobs import artifacts_for, batch_key_for, item_for

__all__ = ["generate_to_dir"]

_SUFFIXES = {ArtifactKind.GIF: "denoise", ArtifactKind.DEPTH: "depth"}


def _progress_bar(total: int) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A tqdm bar on a terminal; silence when piped."""
    if not sys.stderr.isatty():
        return (lambda step, steps: None), (lambda: None)
    from tqdm import tqdm

    bar = tqdm(total=total, unit="step", file=sys.stderr, leave=False)

    def on_step(step: int, steps: int) -> None:
        bar.n = step
        bar.refresh()

    return on_step, bar.close


def generate_to_dir(
    settings: Settings,
    text: str,
    out: Path,
    *,
    gif: bool = False,
    upload: Path | None = None,
    depth: Path | None = None,
) -> list[Path]:
    """Parse ``text`` like a chat message, generate, and write PNGs (and GIFs) into ``out``.

    ``depth`` (``--depth FILE``) makes it a /depth command with that depth map or photo;
    ``upload`` (``--file``) attaches a file to a command that must already be /depth. /depth
    also writes the depth map used, ``seed-N-depth.png`` beside each image.
    """
    from gouache.generation.loop.engine import Engine
    from gouache.observability import quiet_model_libraries
    from gouache.worker.loading import build_estimators, build_registry

    if depth is not None and upload is not None:
        raise InvalidRequest(messages.DEPTH_AND_FILE)
    if depth is not None:
        first = text.split()[0].lower() if text.split() else ""
        if first.startswith("/") and first != "/depth":
            raise InvalidRequest(messages.only_with("--depth", "/depth"))
        text = text if first == "/depth" else f"/depth {text}"
        upload = depth
    if gif and "--gif" not in text:
        text = f"{text} --gif"
    command = parse_text(text)
    if upload is not None and KINDS[command.kind].upload == "none":
        raise InvalidRequest(messages.FILE_NEEDS_DEPTH)
    quiet_model_libraries()
    origin = Origin(platform="cli", request_id=uuid.uuid4().hex, user="cli")
    registry = build_registry(settings)
    request = build_request(command, origin, settings, prompt_overflow=prompt_length_checker(settings))
    request, inputs = attach(request, upload.read_bytes() if upload is not None else None,
                             settings.limits)  # fmt: skip
    inputs = [replace(a, job_id="local") for a in inputs]
    for note in request.notes:
        print(f"note: {note}", file=sys.stderr)
    estimators = build_estimators(settings)
    engine = Engine(registry)
    on_step, close = _progress_bar(request.steps * request.cells * (-(-request.frames // 16) or 1))
    control = None
    try:
        if is_experiment(request):
            result, artifacts = experiment_job(engine, "local", request, inputs, settings.limits,
                                               settings.gif, on_step, estimators=estimators.get,
                                               batching=settings.batching)  # fmt: skip
        else:
            item = item_for("local", request, inputs, settings.limits, settings.gif, estimators.get)
            control = item.control_image
            [result] = engine.generate(batch_key_for(request), [item], on_step=on_step)
            artifacts = []
    finally:
        close()
    if result.error is not None:
        raise result.error
    if not is_experiment(request):
        artifacts = artifacts_for("local", request, result, settings.gif, depth=control)
    if request.process:
        artifacts += process_artifacts("local", request, result, loaded_model(engine, request.model),
                                       settings.gif)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for artifact in artifacts:
        # image 1 -> "seed-8.png", its GIF -> "seed-8-denoise.gif", the depth map it used
        # -> "seed-8-depth.png": the file name says which seed reproduces it. A sweep's cells
        # share a seed: "cell-3.png" beside "grid.png".
        ext = artifact.name.rsplit(".", 1)[-1]
        if request.sweep and artifact.index is not None:
            path = out / f"cell-{artifact.index}.{ext}"
        elif request.frames and artifact.index is not None:  # the endpoints
            path = out / f"frame-{artifact.index}.{ext}"
        elif artifact.index is None:
            path = out / artifact.name
        else:
            suffix = "" if artifact.kind is ArtifactKind.IMAGE else f"-{_SUFFIXES[artifact.kind]}"
            path = out / f"seed-{request.image_seed(artifact.index)}{suffix}.{ext}"
        path.write_bytes(artifact.data)
        written.append(path)
    return written

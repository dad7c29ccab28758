"""`gouache generate`: one command straight through the engine, no queue, files on disk."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable
from pathlib import Path

from gouache.bot.commands import build_request, parse_text
from gouache.config import Settings
from gouache.request import Origin
from gouache.storage.jobs import Artifact, ArtifactKind
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
    settings: Settings, text: str, out: Path, *, gif: bool = False, upload: Path | None = None
) -> list[Path]:
    """Parse ``text`` like a chat message, generate, and write PNGs (and GIFs) into ``out``."""
    from gouache.generation.engine import Engine
    from gouache.observability import quiet_model_libraries
    from gouache.worker.loading import build_registry

    quiet_model_libraries()

    if gif and "--gif" not in text:
        text = f"{text} --gif"
    origin = Origin(platform="cli", request_id=uuid.uuid4().hex, user="cli")
    registry = build_registry(settings)
    request = build_request(parse_text(text), origin, settings, prompt_overflow=registry.prompt_overflow)
    for note in request.notes:
        print(f"note: {note}", file=sys.stderr)
    inputs = []
    if upload is not None:
        inputs.append(Artifact("local", upload.name, ArtifactKind.INPUT, "application/octet-stream", upload.read_bytes()))
    engine = Engine(registry)
    on_step, close = _progress_bar(request.steps * request.cells * (-(-request.frames // 16) or 1))
    try:
        if is_experiment(request):
            result, artifacts = experiment_job(engine, "local", request, inputs, settings.limits,
                                               settings.gif, on_step)  # fmt: skip
        else:
            item = item_for("local", request, inputs, settings.limits, settings.gif)
            [result] = engine.generate(batch_key_for(request), [item], on_step=on_step)
            artifacts = []
    finally:
        close()
    if result.error is not None:
        raise result.error
    if not is_experiment(request):
        artifacts = artifacts_for("local", request, result, settings.gif)
    if request.process:
        artifacts += process_artifacts("local", request, result, loaded_model(engine, request.model),
                                       settings.gif)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for artifact in artifacts:
        # image 1 -> "seed-8.png", its GIF -> "seed-8-denoise.gif": the file name says which
        # seed reproduces it. A sweep's cells share a seed: "cell-3.png" beside "grid.png".
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

"""`gouache generate`: one command straight through the engine, no queue, files on disk."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from gouache import messages
from gouache.bot.commands import Command, build_request, parse_arguments, parse_text
from gouache.bot.prompt_length import prompt_length_checker
from gouache.bot.uploads import attach
from gouache.config import Settings
from gouache.errors import InvalidRequest
from gouache.request import KINDS, Kind, Origin
from gouache.worker.experiments import (
    experiment_job,
    is_experiment,
    loaded_model,
    process_artifacts,
)
from gouache.worker.jobs import artifacts_for, batch_key_for, item_for

__all__ = ["command_for", "generate_to_dir"]


def command_for(text: str, *, with_file: bool, image: bool = False) -> Command:
    """``text`` as chat reads it. With ``--file``, a prompt that names no command is a /depth;
    with ``--image``, an /imagine (a remix); a command that takes no such file is refused."""
    words = text.split()
    if with_file and not (words and words[0].startswith("/")):
        return parse_arguments(Kind.IMAGINE if image else Kind.DEPTH, text)
    command = parse_text(text)
    spec = KINDS[command.kind]
    if with_file and image and spec.image == "none":
        raise InvalidRequest(messages.only_with("--image", "/imagine or /upscale"))
    if with_file and not image and spec.depth_map == "none":
        raise InvalidRequest(messages.only_with("--file", "/depth"))
    return command


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
    upload: Path | None = None,
    image: bool = False,
) -> list[Path]:
    """Parse ``text`` like a chat message, generate, and write the files into ``out``.

    ``upload`` (``--file FILE``) is the depth map or photo of a /depth command; a prompt that
    names no command becomes one. With ``image`` (``--image FILE``) it is an image to start
    from instead: a remix (/imagine) unless the prompt names /upscale. Files carry the names
    the web API gives them (``image-0.png``, ``denoise-0.gif``, ``depth.png``, ``grid.png``, ...); each PNG's
    ``parameters`` chunk records the seed and settings that reproduce it.
    """
    from gouache.generation.loop.engine import Engine
    from gouache.observability import quiet_model_libraries
    from gouache.worker.loading import build_estimators, build_registry

    command = command_for(text, with_file=upload is not None, image=image)
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
        path = out / artifact.name  # the web API's names: one vocabulary everywhere
        path.write_bytes(artifact.data)
        written.append(path)
    return written

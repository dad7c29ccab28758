"""`gouache diversity`: a /diversity set straight through the engine, its report on the terminal.

Takes the chat command language (``a red circle --n 8 --enlarge cads --seed 5``) with chat's
defaults (``limits.diversity_count`` images). Writes the files under the web API's names
(``image-<i>.png``; with ``--enlarge`` the baseline goes to ``baseline/``), ``report.png``
(grid + heatmaps + text) and ``report.json``, and prints the text block. Models
load through ``worker/loading.py`` like the worker's, so the figures are the worker's figures.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

from gouache.bot.commands import Command, build_request, parse_arguments
from gouache.bot.prompt_length import prompt_length_checker
from gouache.config import Settings
from gouache.request import Kind, Origin
from gouache.worker.jobs import Made, artifacts_for, batch_key_for, item_for

__all__ = ["DiversityRun", "diversity_command", "diversity_to_dir"]


@dataclass(frozen=True)
class DiversityRun:
    text: str  # the report's text block
    written: list[Path]
    report: dict


def diversity_command(text: str) -> Command:
    """The /diversity command ``text`` asks for; a leading ``/diversity`` (the chat form, typed
    out of habit) is dropped."""
    words = text.split()
    if words and words[0].lower() == "/diversity":
        text = " ".join(words[1:])
    return parse_arguments(Kind.DIVERSITY, text)


def diversity_to_dir(settings: Settings, text: str, out: Path) -> DiversityRun:
    """Generate the /diversity set ``text`` asks for (baseline and enlarged with ``--enlarge``),
    score it and write everything into ``out``."""
    from gouache.generation.diversity.enlarge import generate_enlarged
    from gouache.generation.diversity.report import scored
    from gouache.generation.loop.engine import Engine
    from gouache.observability import quiet_model_libraries
    from gouache.worker.loading import build_registry, build_scorer

    quiet_model_libraries()
    command = diversity_command(text)
    # A terminal run is one user's: it may ask for a larger set than a chat request.
    count = int(command.options.get("count", settings.limits.diversity_count))
    limits = settings.limits.model_copy(update={"max_images": max(settings.limits.max_images, count)})
    settings = settings.model_copy(update={"limits": limits})
    origin = Origin(platform="cli", request_id=uuid.uuid4().hex, user="cli")
    registry = build_registry(settings)
    request = build_request(command, origin, settings, prompt_overflow=prompt_length_checker(settings))
    item = item_for("local", request, [], settings.limits, settings.gif)
    engine, scorer = Engine(registry), build_scorer(settings, registry)
    baseline, made = None, None
    if request.enlarge:
        enc = scorer.encoders_for(request.model)
        runs = generate_enlarged(engine.generate, batch_key_for(request), [item], request.enlarge,
                                 clip=enc.clip, known=scorer.known_for(request.model))  # fmt: skip
        baseline, result = runs["local"].baseline, runs["local"].enlarged
        made = Made(runs["local"].prompts, runs["local"].seeds)
    else:
        [result] = engine.generate(batch_key_for(request), [item])
    for failed in (result, baseline):
        if failed is not None and failed.error is not None:
            raise failed.error
    report, picture = scored(scorer, request.model, request.prompt, result.images,
                             None if baseline is None else baseline.images, request.enlarge)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for artifact in artifacts_for("local", request, result, settings.gif, report, picture, made):
        path = out / artifact.name  # the web API's names
        path.write_bytes(artifact.data)
        written.append(path)
    if baseline is not None:
        (out / "baseline").mkdir(exist_ok=True)
        for index, image in enumerate(baseline.images):
            path = out / "baseline" / f"image-{index}.png"
            image.save(path)
            written.append(path)
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    return DiversityRun(text=str(report["summary"]), written=written, report=report)

"""Chat rendering shared by the Discord and Slack adapters, free of any chat SDK.

What a finished job says (prompt, seed, size, steps, guidance, sampler, model, time taken),
progress and error text, and the button ids every platform decodes the same way. How files fit
a platform's upload rules and its markup (Slack's Block Kit, Discord's Markdown and
``upload_plans``) live in each adapter's folder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable

from gouache import messages
from gouache.bot.adapter import Result
from gouache.request import Request
from gouache.storage.jobs import Artifact, ArtifactKind, Job

__all__ = [
    "ASPECT_RATIOS",
    "CANCEL",
    "result_text",
    "error_text",
    "progress_text",
    "result_job",
    "action_id",
    "parse_action_id",
    "artifact_label",
]

ASPECT_RATIOS = ("1:1", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16", "21:9")
CANCEL = "cancel"  # a button only chat adapters show (queued jobs); not a follow-up Request
_ACTIONS = ("reroll", "variations", "gif", "diversify", CANCEL)
_PER_IMAGE = re.compile(r"(?:upscale|vary-subtle|vary-strong)\.[0-9]{1,2}")  # U and V, per image


def action_id(action: str, job_id: str) -> str:
    """``gouache:<action>:<job_id>``: Discord custom_id, Slack action_id and value."""
    return f"gouache:{action}:{job_id}"


def parse_action_id(value: str) -> tuple[str, str] | None:
    parts = value.split(":")
    if len(parts) != 3 or parts[0] != "gouache" or not parts[2]:
        return None
    if parts[1] not in _ACTIONS and _PER_IMAGE.fullmatch(parts[1]) is None:
        return None
    return parts[1], parts[2][:64]


def result_job(ids: Iterable[str]) -> str | None:
    """The job a posted result belongs to, from its buttons' action ids (Cancel aside)."""
    for value in ids:
        parsed = parse_action_id(value)
        if parsed is not None and parsed[0] != CANCEL:
            return parsed[1]
    return None


def progress_text(fraction: float) -> str:
    percent = max(0, min(100, round(fraction * 100)))
    return f"{messages.started()} {percent}%"


def result_text(result: Result, escape: Callable[[str], str] = lambda s: s) -> str:
    """The caption under the images: prompt, the settings to reproduce it, notes, report."""
    r = result.job.request
    head = f"“{escape(messages.shorten(r.prompt, 200))}”"
    if r.negative_prompt:
        head += f" (not: {escape(messages.shorten(r.negative_prompt, 80))})"
    facts = [f"seed {r.seed}", f"{r.width}x{r.height}", f"{r.steps} steps",
             messages.guidance_caption(r.guidance_kind, r.guidance), r.sampler, escape(r.model)]  # fmt: skip
    if r.pipeline == "depth" and r.strength != 1.0:
        facts.append(f"strength {messages.number(r.strength)}")
    if r.style:
        facts.append(f"style {escape(r.style)}")
    if r.loras:
        facts.append("LoRA " + ", ".join(f"{escape(name)} {messages.number(scale)}" for name, scale in r.loras))
    taken = _time_taken(result.job)
    if taken is not None:
        facts.append(f"{messages.number(round(taken, 1))} s")
    lines = [" · ".join([head, *facts])]
    lines += [f"- {escape(n)}" for n in result.notes]
    if result.withheld:
        lines.append(f"{result.withheld} image(s) were held back by the content filter.")
    for report in result.of_kind(ArtifactKind.REPORT):
        lines += _report_lines(report)
    return "\n".join(lines)


def _time_taken(job: Job) -> float | None:
    if job.started_at is None or job.finished_at is None:
        return None
    return max(0.0, (job.finished_at - job.started_at).total_seconds())


def _report_lines(report: Artifact) -> list[str]:
    try:
        data = json.loads(report.data)
    except ValueError:
        return []
    if not isinstance(data, dict):
        return []
    if isinstance(data.get("summary"), str):
        return [data["summary"]]
    return [f"{k}: {messages.number(v)}" for k, v in data.items()
            if isinstance(v, int | float) and not isinstance(v, bool)][:8]  # fmt: skip


def error_text(job: Job, message: str) -> str:
    return f"{message} (“{messages.shorten(job.request.prompt, 60)}”)"


_EXPERIMENT_FILES = {
    "grid.png": "sweep grid",
    "interpolation.gif": "interpolation (looping GIF)",
    "strip.png": "interpolation strip (the weight under each frame)",
    "process.gif": "noised, then denoised (GIF)",
    "process-strip.png": "forward then reverse process (the timestep under each frame)",
}


def artifact_label(request: Request, artifact: Artifact) -> str | None:
    """What an experiment's file shows: the grid, a sweep cell's axis values (row-major, the
    first axis along the columns, as ``worker/sweeps.cells``), an interpolation endpoint, the
    GIFs and strips; an ordinary job's files say their kind and number ("image 2", "GIF 2")."""
    if artifact.kind in _KIND_LABELS and artifact.index is None:
        return _KIND_LABELS[artifact.kind]
    if artifact.index is None:
        label = _EXPERIMENT_FILES.get(artifact.name)
        if label == "sweep grid" and request.sweep:
            return f"sweep grid: {' x '.join(axis for axis, _ in request.sweep)}"
        return label if request.sweep or request.frames or request.process else None
    if request.sweep and artifact.kind is ArtifactKind.IMAGE and artifact.index < request.cells:
        k, values = artifact.index, []
        for axis, choices in request.sweep:  # the first axis varies fastest
            values.append(f"{axis}={choices[k % len(choices)]}")
            k //= len(choices)
        return f"cell {artifact.index}: " + ", ".join(values)
    if request.frames and artifact.kind is ArtifactKind.IMAGE:
        end = "A" if artifact.index == 0 else "B"
        return f"endpoint {end} (frame {artifact.index + 1} of {request.frames})"
    noun = _INDEXED_LABELS.get(artifact.kind)
    return f"{noun} {artifact.index + 1}" if noun else None


_KIND_LABELS = {ArtifactKind.REPORT: "diversity report", ArtifactKind.COMPOSITE: "diversity report picture",
                ArtifactKind.DEPTH: "depth map used"}  # fmt: skip
_INDEXED_LABELS = {ArtifactKind.IMAGE: "image", ArtifactKind.GIF: "GIF", ArtifactKind.DEPTH: "depth map"}

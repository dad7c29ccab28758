"""Chat rendering shared by the Discord and Slack adapters, free of any chat SDK.

What a finished job says, which files go with it, and how an upload degrades when the
platform answers 413: fewer files, then compressed images, then links to the web artifacts.
Platform markup (Slack's Block Kit, Discord's Markdown) lives in each adapter's folder.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gouache import messages
from gouache.bot.adapter import Result
from gouache.storage.jobs import Artifact, ArtifactKind, Job

__all__ = [
    "ASPECT_RATIOS",
    "CANCEL",
    "Plan",
    "delivery_plans",
    "result_text",
    "error_text",
    "progress_text",
    "action_id",
    "parse_action_id",
]

ASPECT_RATIOS = ("1:1", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16", "21:9")
CANCEL = "cancel"  # a button only chat adapters show (queued jobs); not a follow-up Request
_ACTIONS = ("reroll", "gif", "diversify", CANCEL)
_SHOWN = (ArtifactKind.COMPOSITE, ArtifactKind.IMAGE, ArtifactKind.DEPTH, ArtifactKind.GIF)  # posting order


@dataclass(frozen=True)
class Plan:
    """One attempt at posting a result: these files, plus a note on what was left out."""

    label: str
    files: list[tuple[str, bytes]] = field(default_factory=list)
    note: str = ""


def action_id(action: str, job_id: str) -> str:
    """``gouache:<action>:<job_id>``: Discord custom_id, Slack action_id and value."""
    return f"gouache:{action}:{job_id}"


def parse_action_id(value: str) -> tuple[str, str] | None:
    parts = value.split(":")
    if len(parts) != 3 or parts[0] != "gouache" or parts[1] not in _ACTIONS or not parts[2]:
        return None
    return parts[1], parts[2][:64]


def progress_text(fraction: float) -> str:
    percent = max(0, min(100, round(fraction * 100)))
    return f"{messages.started()} {percent}%"


def result_text(result: Result, escape: Callable[[str], str] = lambda s: s) -> str:
    """The caption under the images: prompt, the settings to reproduce it, notes, report."""
    r = result.job.request
    head = f"“{escape(messages.shorten(r.prompt, 200))}”"
    if r.negative_prompt:
        head += f" (not: {escape(messages.shorten(r.negative_prompt, 80))})"
    lines = [f"{head} · seed {r.seed} · {r.steps} steps · {r.sampler} · {escape(r.model)}"]
    lines += [f"- {escape(n)}" for n in result.notes]
    if result.withheld:
        lines.append(f"{result.withheld} image(s) were held back by the content filter.")
    for report in result.of_kind(ArtifactKind.REPORT):
        lines += _report_lines(report)
    return "\n".join(lines)


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


def delivery_plans(
    result: Result, artifact_url: Callable[[str, str], str | None]
) -> list[Plan]:
    """Attempts from best to smallest; the adapter tries the next one after a 413."""
    shown = sorted((a for a in result.artifacts if a.kind in _SHOWN),
                   key=lambda a: (_SHOWN.index(a.kind), a.name))  # fmt: skip
    images = [a for a in shown if a.kind is not ArtifactKind.GIF]
    plans = [Plan("all", [(a.name, a.data) for a in shown])]
    if len(images) < len(shown):
        left = [a for a in shown if a.kind is ArtifactKind.GIF]
        plans.append(Plan("images", [(a.name, a.data) for a in images],
                          _left_out(result, left, artifact_url)))  # fmt: skip
    small = [(a.name.rsplit(".", 1)[0] + ".jpg", _jpeg(a.data)) for a in images]
    small = [(n, d) for n, d in small if d]
    if small:
        plans.append(Plan("compressed", small, _left_out(
            result, [a for a in shown if a.kind is ArtifactKind.GIF], artifact_url,
            "\nImages were compressed to fit the upload limit.")))  # fmt: skip
        plans.append(Plan("one", small[:1], _left_out(result, shown[1:], artifact_url)))
    plans.append(Plan("links", [], _left_out(result, shown, artifact_url)))
    return plans


def _left_out(
    result: Result, left: Sequence[Artifact], artifact_url: Callable[[str, str], str | None],
    prefix: str = "",
) -> str:  # fmt: skip
    if not left:
        return prefix
    links = [url for a in left if (url := artifact_url(result.job.id, a.name))]
    if len(links) < len(left):  # no public address configured (web.public_url)
        return prefix + f"\n{len(left)} file(s) were too large to upload here."
    return prefix + "\nToo large to upload here:\n" + "\n".join(links)


def _jpeg(data: bytes, quality: int = 80) -> bytes:
    """Our own PNG re-encoded as JPEG (the bytes came from the worker, not a user)."""
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            out = io.BytesIO()
            image.convert("RGB").save(out, "JPEG", quality=quality, optimize=True)
            return out.getvalue()
    except Exception:  # not an image we can shrink: leave it to the next plan
        return b""

"""/depth on Slack: a modal with a file input, because slash commands cannot carry files.

``/depth a hill --steps 20`` opens this modal at once (``views.open`` with the command's
``trigger_id``, which Slack honours for 3 seconds) with the prompt and options prefilled; the
"Use as depth map" message shortcut opens the same modal with that message's image already
chosen. The ``view_submission`` brings back the typed text, the uploaded file objects and our
``private_metadata`` (channel, the command's ``response_url``, the shortcut's file): Slack
returns it only to this app, inside a signed request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gouache.bot.adapters.slack import replies
from gouache.bot.adapters.slack.blocks import slack_escape

__all__ = ["CALLBACK_ID", "SHORTCUT_ID", "depth_view", "Submission", "read_submission",
           "split_options", "image_file"]  # fmt: skip

CALLBACK_ID = "gouache_depth"
SHORTCUT_ID = "gouache_use_as_depth"
_FILE_TYPES = ["png", "jpg", "jpeg", "webp", "npy"]
_IMAGE_MIMES = ("image/png", "image/jpeg", "image/webp")
_FILE_KEYS = ("id", "name", "size", "mimetype", "url_private", "url_private_download")


def split_options(text: str) -> tuple[str, str]:
    """``"a hill --steps 20"`` -> ``("a hill", "--steps 20")``: the modal's two fields."""
    words = text.split()
    for i, word in enumerate(words):
        if word.startswith("--"):
            return " ".join(words[:i]), " ".join(words[i:])
    return text.strip(), ""


def image_file(message: Mapping[str, Any]) -> dict[str, Any] | None:
    """The first image on a message, trimmed to what a download needs."""
    for file in message.get("files") or []:
        if isinstance(file, dict) and str(file.get("mimetype", "")) in _IMAGE_MIMES:
            return {k: file[k] for k in _FILE_KEYS if k in file}
    return None


def depth_view(
    text: str, *, channel: str, response_url: str = "", file: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The modal; ``file`` (from a shortcut) makes the file input optional."""
    prompt, options = split_options(text)
    meta = {"channel": channel, "response_url": response_url, "file": dict(file or {})}
    blocks: list[dict[str, Any]] = []
    if file:
        name = slack_escape(str(file.get("name", "the image")))[:200]
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": f"Depth map: *{name}* from that message."}]})  # fmt: skip
    blocks += [
        _text_input("prompt", "Prompt", prompt, "a lighthouse on a cliff at dusk"),
        _text_input("options", "Options", options, "--steps 20 --guidance 6 --seed 7",
                    optional=True),  # fmt: skip
        {"type": "input", "block_id": "file", "optional": bool(file),
         "label": {"type": "plain_text", "text": "Depth map or photo"},
         "element": {"type": "file_input", "action_id": "file", "filetypes": _FILE_TYPES,
                     "max_files": 1}},  # fmt: skip
    ]
    return {
        "type": "modal",
        "callback_id": CALLBACK_ID,
        "title": {"type": "plain_text", "text": replies.MODAL_TITLE},
        "submit": {"type": "plain_text", "text": "Generate"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "private_metadata": json.dumps(meta)[:3000],
        "blocks": blocks,
    }


def _text_input(
    block_id: str, label: str, value: str, hint: str, *, optional: bool = False
) -> dict[str, Any]:
    element: dict[str, Any] = {"type": "plain_text_input", "action_id": block_id,
                               "placeholder": {"type": "plain_text", "text": hint}}  # fmt: skip
    if value:
        element["initial_value"] = value[:3000]
    return {"type": "input", "block_id": block_id, "optional": optional,
            "label": {"type": "plain_text", "text": label}, "element": element}  # fmt: skip


@dataclass(frozen=True)
class Submission:
    """What a submitted modal asks for: the /depth command's arguments (prompt and flags) and
    the file to download."""

    text: str
    channel: str
    response_url: str
    files: list[dict[str, Any]] = field(default_factory=list)


def read_submission(view: Mapping[str, Any]) -> Submission:
    """The submitted values; the uploaded file wins over the shortcut's."""
    values = view.get("state", {}).get("values", {})
    prompt = str(values.get("prompt", {}).get("prompt", {}).get("value") or "")
    options = str(values.get("options", {}).get("options", {}).get("value") or "")
    uploaded = values.get("file", {}).get("file", {}).get("files") or []
    try:
        meta = json.loads(str(view.get("private_metadata") or "{}"))
    except ValueError:
        meta = {}
    meta = meta if isinstance(meta, dict) else {}
    files = [f for f in uploaded if isinstance(f, dict)]
    if not files and isinstance(meta.get("file"), dict) and meta["file"]:
        files = [meta["file"]]
    return Submission(
        text=f"{prompt} {options}".strip(),
        channel=str(meta.get("channel") or ""),
        response_url=str(meta.get("response_url") or ""),
        files=files,
    )

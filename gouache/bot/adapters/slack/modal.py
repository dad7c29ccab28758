"""Files on Slack: a modal with a file input, because slash commands cannot carry files.

Every command ``request.KINDS`` says needs a file opens it: ``/depth a hill --steps 20`` the
depth modal (a depth map or photo), ``/upscale`` and ``/edit`` the image modal (an image to
start from), at once (``views.open`` with the command's ``trigger_id``, which Slack honours
for 3 seconds) with the prompt and options prefilled. Two message shortcuts open them with
that message's image already chosen: "Use as depth map" (/depth) and "Remix this image"
(/imagine with the image; its options may say ``--strength``). The command the modal is for
travels in ``private_metadata``. The ``view_submission`` brings back the typed text, the uploaded file objects and our
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
from gouache.request import KINDS, Kind

__all__ = ["CALLBACK_ID", "SHORTCUT_ID", "REMIX_SHORTCUT_ID", "SHORTCUTS", "depth_view", "file_view",
           "Submission", "read_submission", "split_options", "image_file"]  # fmt: skip

CALLBACK_ID = "gouache_depth"  # every file modal (the command is in its metadata)
SHORTCUT_ID = "gouache_use_as_depth"
REMIX_SHORTCUT_ID = "gouache_remix"
SHORTCUTS = {SHORTCUT_ID: Kind.DEPTH, REMIX_SHORTCUT_ID: Kind.IMAGINE}  # the manifest lists these
_FILE_TYPES = ["png", "jpg", "jpeg", "webp", "npy"]
_IMAGE_TYPES = ["png", "jpg", "jpeg", "webp"]
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
    """The /depth modal; ``file`` (from a shortcut) makes the file input optional."""
    return file_view(Kind.DEPTH, text, channel=channel, response_url=response_url, file=file)


def file_view(
    kind: Kind, text: str, *, channel: str, response_url: str = "",
    file: Mapping[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The modal for ``kind``: a depth map or photo where it takes a depth map, an image to
    start from where it takes an image (``KINDS``); ``file`` (from a shortcut) makes the
    file input optional. Only /upscale may leave the prompt out (our images carry theirs)."""
    depth = KINDS[kind].depth_map != "none"
    prompt, options = split_options(text)
    meta = {"kind": kind.value, "channel": channel, "response_url": response_url,
            "file": dict(file or {})}  # fmt: skip
    blocks: list[dict[str, Any]] = []
    if file:
        name = slack_escape(str(file.get("name", "the image")))[:200]
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": replies.chosen_file(name, depth)}]})  # fmt: skip
    blocks += [
        _text_input("prompt", "Prompt", prompt, "a lighthouse on a cliff at dusk",
                    optional=kind is Kind.UPSCALE),  # fmt: skip
        _text_input("options", "Options", options, replies.OPTION_HINTS.get(kind.value, "--seed 7"),
                    optional=True),  # fmt: skip
        {"type": "input", "block_id": "file", "optional": bool(file),
         "label": {"type": "plain_text", "text": replies.file_label(depth)},
         "element": {"type": "file_input", "action_id": "file",
                     "filetypes": _FILE_TYPES if depth else _IMAGE_TYPES, "max_files": 1}},  # fmt: skip
    ]
    return {
        "type": "modal",
        "callback_id": CALLBACK_ID,
        "title": {"type": "plain_text", "text": replies.MODAL_TITLES.get(kind.value, replies.MODAL_TITLE)},
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
    """What a submitted modal asks for: the command, its arguments (prompt and flags) and the
    file to download."""

    kind: Kind
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
    kind = Kind.DEPTH  # a modal opened before the kind was recorded
    if str(meta.get("kind")) in {k.value for k in KINDS} and KINDS[Kind(str(meta["kind"]))].takes_file:
        kind = Kind(str(meta["kind"]))
    return Submission(
        kind=kind,
        text=f"{prompt} {options}".strip(),
        channel=str(meta.get("channel") or ""),
        response_url=str(meta.get("response_url") or ""),
        files=files,
    )

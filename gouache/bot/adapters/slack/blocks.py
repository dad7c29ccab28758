"""Slack markup: escaping user text and Block Kit messages with gouache's buttons.

Plain dicts, no slack-bolt import, so they are easy to test; the button ids come from the
shared ``captions.action_id`` so every platform decodes a press the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gouache.bot.adapter import Button, Result
from gouache.bot.captions import action_id, result_text

__all__ = ["slack_escape", "slack_markdown", "slack_blocks", "slack_caption"]


def slack_escape(text: str) -> str:
    """Slack's three control characters in user text; nothing else is special."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_markdown(text: str) -> str:
    """Shared chat text (Discord Markdown: ``**bold**``, code in backticks) as Slack mrkdwn."""
    return slack_escape(text).replace("**", "*")


def slack_blocks(
    text: str, buttons: Sequence[Button | tuple[str, str, str]] = ()
) -> list[dict[str, Any]]:
    """A section with ``text`` (already escaped) and buttons: ``Button``s or
    ``(action, job_id, label)`` for the chat-only Cancel button."""
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}
    ]
    triples = [(b.token, b.job_id, b.label) if isinstance(b, Button) else b
               for b in buttons]  # fmt: skip
    if triples:
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": label},
             "action_id": action_id(action, job_id), "value": action_id(action, job_id)}
            for action, job_id, label in triples
        ]})  # fmt: skip
    return blocks


def slack_caption(result: Result) -> str:
    """The comment on the uploaded files: how to reproduce them, and how long they took.

    The shared ``result_text`` gives prompt, seed, steps, guidance (named for what it is: CFG
    scale, distilled guidance), sampler, model, notes and reports; Slack adds the size and
    timing that a thread reply has room for.
    """
    job, request = result.job, result.job.request
    parts = [f"{request.width}×{request.height}"]
    if request.count > 1:
        parts.append(f"{request.count} images")
    if job.started_at is not None and job.finished_at is not None:
        took = (job.finished_at - job.started_at).total_seconds()
        waited = (job.started_at - job.created_at).total_seconds()
        parts.append(f"took {took:.1f} s (queued {max(0.0, waited):.1f} s)")
    return result_text(result, slack_escape) + "\n" + " · ".join(parts)

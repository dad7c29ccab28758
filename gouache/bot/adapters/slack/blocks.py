"""Slack markup: escaping user text and Block Kit messages with gouache's buttons.

Plain dicts, no slack-bolt import, so they are easy to test; the button ids come from the
shared ``captions.action_id`` so every platform decodes a press the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gouache.bot.adapter import Button
from gouache.bot.captions import action_id

__all__ = ["slack_escape", "slack_blocks"]


def slack_escape(text: str) -> str:
    """Slack's three control characters in user text; nothing else is special."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_blocks(
    text: str, buttons: Sequence[Button | tuple[str, str, str]] = ()
) -> list[dict[str, Any]]:
    """A section with ``text`` (already escaped) and buttons: ``Button``s or
    ``(action, job_id, label)`` for the chat-only Cancel button."""
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}
    ]
    triples = [(b.action.value, b.job_id, b.label) if isinstance(b, Button) else b
               for b in buttons]  # fmt: skip
    if triples:
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": label},
             "action_id": action_id(action, job_id), "value": action_id(action, job_id)}
            for action, job_id, label in triples
        ]})  # fmt: skip
    return blocks

"""Discord text rules: Markdown and mentions escaped in user text, 2,000 characters a message."""

from __future__ import annotations

import discord

__all__ = ["MAX_CONTENT", "escape", "clip", "chunks", "NO_MENTIONS"]

MAX_CONTENT = 2000  # characters of ``content`` Discord accepts in one message
NO_MENTIONS = discord.AllowedMentions.none()  # on the client and on every send and edit


def escape(text: str) -> str:
    """User text shown as typed: no masked links, no formatting, no pings (even if allowed)."""
    return discord.utils.escape_mentions(discord.utils.escape_markdown(text))


def clip(text: str, limit: int = MAX_CONTENT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def chunks(text: str, limit: int = MAX_CONTENT) -> list[str]:
    """``text`` in messages of at most ``limit`` characters, split at line ends where it can."""
    out: list[str] = []
    current = ""
    for line in text.split("\n"):
        while len(line) > limit:
            if current:
                out.append(current)
                current = ""
            out.append(line[:limit])
            line = line[limit:]
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > limit:
            out.append(current)
            current = line
        else:
            current = candidate
    if current:
        out.append(current)
    return out

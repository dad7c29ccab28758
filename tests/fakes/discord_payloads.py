"""Discord API v10 objects as the fake server sends them: snowflakes, users, interactions."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from tests.fakes import discord_checks as checks
from tests.fakes.discord_checks import OptionRejected

__all__ = ["snowflake", "snowflake_time", "user", "interaction", "command_data", "message",
           "DISCORD_EPOCH_MS"]  # fmt: skip

DISCORD_EPOCH_MS = 1420070400000
_counter = itertools.count(1)


def snowflake(at: float | None = None) -> str:
    """A real-looking snowflake, so ``discord.utils.snowflake_time`` gives ``at``."""
    ms = int((time.time() if at is None else at) * 1000)
    return str(((ms - DISCORD_EPOCH_MS) << 22) | (next(_counter) & 0x3FFFFF))


def snowflake_time(value: str) -> float:
    """Unix seconds at which ``snowflake`` was made."""
    return ((int(value) >> 22) + DISCORD_EPOCH_MS) / 1000


def user(user_id: str, *, bot: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {"id": user_id, "username": f"user{user_id[-4:]}",
                            "discriminator": "0", "global_name": None, "avatar": None}  # fmt: skip
    if bot:
        data.update(username="gouache", bot=True)
    return data


def interaction(
    kind: int, application_id: str, user_id: str, channel_id: str, guild_id: str | None,
    age: float = 0.0, *, roles: Sequence[str] = (), upload_limit: int = 10 * 1024 * 1024,
) -> dict[str, Any]:  # fmt: skip
    """An INTERACTION_CREATE payload without ``data``; ``age`` seconds old (its id says so)."""
    payload: dict[str, Any] = {
        "id": snowflake(time.time() - age),
        "application_id": application_id,
        "type": kind,
        "token": f"itoken-{next(_counter)}",
        "version": 1,
        "channel_id": channel_id,
        "channel": {"id": channel_id, "type": 0, "name": "general", "position": 0,
                    "guild_id": guild_id, "permission_overwrites": [], "nsfw": False},
        "locale": "en-US",
        "app_permissions": "2147483647",
        "attachment_size_limit": upload_limit,
        "entitlements": [],
        "authorizing_integration_owners": {"0": guild_id or "0"},
        "context": 0 if guild_id else 1,
    }  # fmt: skip
    if guild_id:
        payload["guild_id"] = guild_id
        payload["guild_locale"] = "en-US"
        payload["member"] = {"user": user(user_id), "roles": list(roles), "permissions": "2147483647",
                             "joined_at": "2024-01-01T00:00:00+00:00", "deaf": False,
                             "mute": False, "flags": 0}  # fmt: skip
    else:
        payload["user"] = user(user_id)
    return payload


def command_data(
    registered_commands: list[dict[str, Any]], name: str, options: dict[str, Any],
    guild_id: str | None, focused: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """``data`` for ``name`` ("imagine", or "gouache pause" for a subcommand), checked against
    the registered commands as Discord's client checks what a user types (``OptionRejected``)."""
    top, *sub = name.split()
    known = {c["name"]: c for c in registered_commands}
    if top not in known:
        raise OptionRejected(f"/{top} is not registered")
    registered = known[top].get("options") or []
    if sub:
        registered = next((o.get("options") or [] for o in registered
                           if o["name"] == sub[0] and o["type"] == 1), [])  # fmt: skip
    by_name = {o["name"]: o for o in registered}
    for option in registered:  # while typing (autocomplete) required ones may be missing
        if option.get("required") and option["name"] not in options and focused is None:
            raise OptionRejected(f"{option['name']} is required")
    opts = []
    for key, value in options.items():
        option = by_name.get(key)
        if key != focused:
            checks.check_option_value(option, value)
        entry = {"name": key, "type": option["type"] if option else 3, "value": value}
        if key == focused:
            entry["focused"] = True
        opts.append(entry)
    if sub:
        opts = [{"name": sub[0], "type": 1, "options": opts}]
    data: dict[str, Any] = {"id": known[top]["id"], "name": top, "type": 1, "options": opts}
    users = [v for k, v in options.items() if by_name.get(k, {}).get("type") == 6]
    if users:
        data["resolved"] = {"users": {u: user(u) for u in users}}
    if guild_id:
        data["guild_id"] = guild_id
    return data


def message(
    channel_id: str, payload: dict[str, Any], author: dict[str, Any],
    attachments: list[dict[str, Any]], message_id: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A message object built from what the client sent (content, components, flags)."""
    return {
        "id": message_id or snowflake(), "channel_id": channel_id, "type": 0,
        "content": payload.get("content") or "", "author": author,
        "attachments": attachments, "embeds": payload.get("embeds") or [], "mentions": [],
        "mention_roles": [], "pinned": False, "mention_everyone": False, "tts": False,
        "timestamp": datetime.now(UTC).isoformat(), "edited_timestamp": None,
        "flags": payload.get("flags") or 0, "components": payload.get("components") or [],
    }  # fmt: skip

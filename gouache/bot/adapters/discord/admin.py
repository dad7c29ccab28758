"""``/gouache pause|resume|reset-limits|usage``: Discord's side of ``bot.admin``.

Who is an admin is decided by ``bot.admin.AdminActions`` (configured users or roles); this only
reads the user's id and role ids from the interaction and names people as mentions (which never
ping: mentions are off on every message).
"""

from __future__ import annotations

import discord

from gouache.bot.admin import Actor, AdminActions
from gouache.storage.base import Usage

__all__ = ["actor", "run_admin"]


def actor(interaction: discord.Interaction) -> Actor:
    user = interaction.user
    # Role ids as the interaction's member object carries them: ``Member.roles`` resolves them
    # against the guild cache, which a bot without the members intent may not have.
    role_ids = getattr(user, "_roles", ()) if isinstance(user, discord.Member) else ()
    return Actor(str(user.id), frozenset(str(r) for r in role_ids), str(user))


def _name(row: Usage) -> str:
    return f"<@{row.user}>" if row.platform == "discord" and row.user.isdigit() else row.user


async def run_admin(
    admin: AdminActions, interaction: discord.Interaction, action: str,
    target: discord.abc.User | None = None,
) -> str:  # fmt: skip
    """The reply for ``action``; raises ``NotAllowed`` for a non-admin."""
    who = actor(interaction)
    if action == "pause":
        return await admin.pause(who)
    if action == "resume":
        return await admin.resume(who)
    if action == "reset-limits" and target is not None:
        return await admin.reset_limits(who, str(target.id), f"<@{target.id}>")
    if action == "usage":
        return await admin.usage(who, _name)
    raise ValueError(f"unknown admin action {action!r}")

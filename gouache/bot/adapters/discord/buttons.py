"""Persistent buttons: the action and the job id live in ``custom_id``, so they survive restarts.

As discord.py's ``examples/views/persistent.py``: a ``DynamicItem`` whose template matches any
``gouache:<action>:<job id>`` a message carries, registered once in ``setup_hook``. Which
buttons a result gets is ``request.KINDS``' decision; this module only draws them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import discord

from gouache.bot.adapter import Button
from gouache.bot.captions import CANCEL, action_id

__all__ = ["ActionButton", "result_view", "cancel_view", "MAX_BUTTONS"]

MAX_BUTTONS = 25  # 5 action rows of 5


class ActionButton(
    discord.ui.DynamicItem[discord.ui.Button],
    template=r"gouache:(?P<action>reroll|variations|gif|diversify|cancel|(?:upscale|vary-subtle|vary-strong)\.[0-9]{1,2}):(?P<job_id>[0-9a-fA-F-]{1,64})",
):
    """A persistent button for one job."""

    def __init__(self, action: str, job_id: str, label: str = "") -> None:
        style = discord.ButtonStyle.danger if action == CANCEL else discord.ButtonStyle.secondary
        super().__init__(
            discord.ui.Button(
                label=(label or action.title())[:80], style=style,
                custom_id=action_id(action, job_id),
            )
        )  # fmt: skip
        self.action, self.job_id = action, job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> ActionButton:
        label = item.label if isinstance(item, discord.ui.Button) else None
        return cls(match["action"], match["job_id"], label or "")

    async def callback(self, interaction: discord.Interaction) -> None:
        on_button = getattr(interaction.client, "on_button", None)
        if on_button is not None:  # the DiscordAdapter; other clients ignore our buttons
            await on_button(interaction, self.action, self.job_id)


def result_view(buttons: Sequence[Button]) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for button in buttons[:MAX_BUTTONS]:
        view.add_item(ActionButton(button.token, button.job_id, button.label))
    return view


def cancel_view(jobs: Sequence[tuple[str, str]]) -> discord.ui.View:
    """One Cancel button per (job id, label); at most ``MAX_BUTTONS``."""
    view = discord.ui.View(timeout=None)
    for job_id, label in jobs[:MAX_BUTTONS]:
        view.add_item(ActionButton(CANCEL, job_id, label))
    return view

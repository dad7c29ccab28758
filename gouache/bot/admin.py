"""Admin commands, the same on every platform: pause, resume, reset a user's limit, usage.

The permission rule lives here once: a configured admin user (``admission.admin_users``) or a
member of a configured admin role (``admission.admin_roles``). A platform's own permission
hints (Discord's ``default_permissions``) are only hints: server admins can change them, so the
bot checks again. The pause is a row in the database, so every bot process sees it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gouache import messages
from gouache.bot.admission import PAUSED_FLAG
from gouache.config import Settings
from gouache.errors import InvalidRequest, NotAllowed
from gouache.storage.base import Storage, Usage

__all__ = ["Actor", "AdminActions", "USAGE_HOURS"]

USAGE_HOURS = 24


@dataclass(frozen=True)
class Actor:
    """Who runs an admin command: a platform user id and the role ids they hold."""

    user: str
    roles: frozenset[str] = frozenset()
    name: str = ""  # shown in the pause row (``updated_by``)


class AdminActions:
    """What admin commands do; each one checks ``is_admin`` first."""

    def __init__(self, storage: Storage, settings: Settings) -> None:
        self._storage = storage
        self._users = frozenset(settings.admission.admin_users)
        self._roles = frozenset(settings.admission.admin_roles)

    def is_admin(self, actor: Actor) -> bool:
        return actor.user in self._users or bool(actor.roles & self._roles)

    def _check(self, actor: Actor) -> None:
        if not self.is_admin(actor):
            raise NotAllowed(messages.admin_only())

    async def pause(self, actor: Actor) -> str:
        self._check(actor)
        if await self._storage.get_flag(PAUSED_FLAG) is not None:
            raise InvalidRequest(messages.already_paused())
        await self._storage.set_flag(PAUSED_FLAG, "1", actor.name or actor.user)
        return messages.paused()

    async def resume(self, actor: Actor) -> str:
        self._check(actor)
        if not await self._storage.set_flag(PAUSED_FLAG, None):
            raise InvalidRequest(messages.not_paused())
        return messages.resumed()

    async def reset_limits(self, actor: Actor, user: str, shown: str) -> str:
        """``user``: the platform id whose token bucket is forgotten; ``shown``: how to name them."""
        self._check(actor)
        return messages.limits_reset(shown, await self._storage.reset_rate_limit(user))

    async def usage(
        self, actor: Actor, name: Callable[[Usage], str] = lambda u: u.user, top: int = 20
    ) -> str:
        """Jobs and image-steps per user and guild over the last ``USAGE_HOURS``."""
        self._check(actor)
        rows = await self._storage.usage(USAGE_HOURS * 3600.0)
        return messages.usage_report(USAGE_HOURS, _lines(rows, name, top))


def _lines(rows: Iterable[Usage], name: Callable[[Usage], str], top: int) -> list[tuple[str, int, int]]:
    rows = list(rows)
    guilds: dict[tuple[str, str], list[int]] = {}
    for row in rows:
        total = guilds.setdefault((row.platform, row.guild), [0, 0])
        total[0] += row.jobs
        total[1] += row.image_steps
    lines = [(name(r), r.jobs, r.image_steps) for r in rows[:top]]
    lines += [(f"{platform} {'guild ' + guild if guild else 'direct/web'} (all users)", j, s)
              for (platform, guild), (j, s) in guilds.items()]  # fmt: skip
    return lines

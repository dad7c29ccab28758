"""Discord: slash commands and buttons in, ``Request``s out; finished jobs back as messages.

The client *receives* its dependencies (settings, storage, admission) and does its async
set-up in ``setup_hook``, like discord.py's ``examples/advanced_startup.py``. It translates
and nothing else: the command language, limits and queueing live in ``commands``,
``admission`` and ``storage``. Mentions are disabled on the client and on every send and edit,
because an edit goes back to Discord's default mention rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from gouache import messages
from gouache.bot import commands
from gouache.bot.actions import ButtonActions
from gouache.bot.adapter import Acknowledgement, Action, AdapterDeps, Progress, Result
from gouache.bot.adapters.discord.outbox import (
    NO_MENTIONS,
    TOKEN_LIFETIME,
    ActionButton,
    DiscordOutbox,
    RedactTokens,
)
from gouache.bot.captions import ASPECT_RATIOS, CANCEL
from gouache.bot.uploads import attach, check_size
from gouache.errors import InvalidRequest, UserError
from gouache.request import Kind, Origin, Request
from gouache.storage.jobs import Artifact, Job

if TYPE_CHECKING:
    pass

__all__ = ["DiscordAdapter", "ActionButton", "TOKEN_LIFETIME", "open_adapter"]

log = logging.getLogger(__name__)


class DiscordAdapter(discord.Client):
    """The Discord side of gouache; ``await adapter.start(token)``, ``await adapter.close()``."""

    platform = "discord"
    can_hide_images = True  # Discord spoilers

    def __init__(self, deps: AdapterDeps, **options: Any) -> None:
        settings, storage = deps.settings, deps.storage
        if settings.discord.application_id:  # else discord.py learns it at login
            options["application_id"] = int(settings.discord.application_id)
        super().__init__(intents=discord.Intents(guilds=True), allowed_mentions=NO_MENTIONS, **options)
        self._settings = settings
        self._storage = storage
        self._actions = ButtonActions(storage, settings.limits)
        self._admission = deps.admission
        self._on_admitted = deps.on_admitted
        self._prompt_overflow = deps.prompt_overflow
        self.tree = app_commands.CommandTree(self)
        self.tree.on_error = self._on_tree_error  # type: ignore[method-assign]
        api_base = (settings.discord.api_base or "").rstrip("/") or None
        self._outbox = DiscordOutbox(self, api_base, deps.artifact_url)
        for name in ("discord.http", "discord.webhook.async_", "discord.gateway", "discord.client"):
            logger = logging.getLogger(name)
            if not any(isinstance(f, RedactTokens) for f in logger.filters):
                logger.addFilter(RedactTokens())

    def routes(self) -> list[Any]:
        """Discord is reached over its gateway: nothing for the web server to mount."""
        return []

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self, token: str | None = None, *, reconnect: bool = True) -> None:
        """Log in and run; tasks spawned from here inherit the routed webhook adapter."""
        with self._outbox.routed():
            configured = self._settings.discord.token
            value = token or (configured.get_secret_value() if configured is not None else "")
            if not value:
                raise ValueError("discord.token is not configured")
            await super().start(str(value), reconnect=reconnect)

    async def setup_hook(self) -> None:
        self.add_dynamic_items(ActionButton)
        self._add_commands()
        await self._sync_commands()

    # --- commands --------------------------------------------------------------------------
    def _add_commands(self) -> None:
        from gouache.generation.samplers import SAMPLERS  # diffusers: imported only at start-up

        samplers = [app_commands.Choice(name=s, value=s) for s in list(SAMPLERS)[:25]]
        ratios = [app_commands.Choice(name=r, value=r) for r in ASPECT_RATIOS]
        models = list(self._settings.models)[:25]
        run = self._run_command

        @app_commands.command(name="imagine", description="Generate images from a prompt")
        @app_commands.describe(prompt="What to draw", negative="What to avoid", count="Images")
        @app_commands.choices(aspect_ratio=ratios, sampler=samplers,
                              model=[app_commands.Choice(name=m, value=m) for m in models])  # fmt: skip
        async def imagine(
            interaction: discord.Interaction, prompt: str, negative: str | None = None,
            seed: int | None = None, steps: int | None = None, guidance: float | None = None,
            aspect_ratio: str | None = None, sampler: str | None = None,
            count: int | None = None, model: str | None = None, gif: bool | None = None,
        ) -> None:  # fmt: skip
            await run(interaction, Kind.IMAGINE, dict(
                prompt=prompt, negative=negative, seed=seed, steps=steps, guidance=guidance,
                aspect_ratio=aspect_ratio, sampler=sampler, count=count, model=model, gif=gif,
            ))  # fmt: skip

        @app_commands.command(name="depth", description="Generate following a depth map or photo")
        @app_commands.describe(image="A depth map (.png/.npy) or a photo")
        async def depth(
            interaction: discord.Interaction, prompt: str, image: discord.Attachment,
            negative: str | None = None, seed: int | None = None,
        ) -> None:  # fmt: skip
            await run(interaction, Kind.DEPTH,
                      dict(prompt=prompt, image=image, negative=negative, seed=seed))  # fmt: skip

        @app_commands.command(name="diversity", description="A deliberately varied batch")
        async def diversity(
            interaction: discord.Interaction, prompt: str, count: int | None = None,
            diversify: bool | None = None,
        ) -> None:  # fmt: skip
            await run(interaction, Kind.DIVERSITY,
                      dict(prompt=prompt, count=count, diversify=diversify))  # fmt: skip

        @app_commands.command(name="interpolate", description="Walk from one prompt (and seed) to another")
        @app_commands.describe(prompt="The first prompt", to="The second prompt", seed="The first seed",
                               seed_b="The second seed", frames="Frames (2-32)")  # fmt: skip
        async def interpolate(
            interaction: discord.Interaction, prompt: str, to: str, seed: int | None = None,
            seed_b: int | None = None, frames: int | None = None,
        ) -> None:  # fmt: skip
            await run(interaction, Kind.INTERPOLATE,
                      dict(prompt=f"{prompt} | {to}", seed=seed, seed_b=seed_b, frames=frames))  # fmt: skip

        commands_: tuple[app_commands.Command[Any, Any, None], ...] = (
            imagine, depth, diversity, interpolate)
        for command in commands_:
            self.tree.add_command(command)
        for guild_id in self._settings.discord.guild_ids:
            self.tree.copy_global_to(guild=discord.Object(int(guild_id)))

    def _commands_digest(self) -> str:
        payload = [c.to_dict(self.tree) for c in self.tree.get_commands()]
        key = {"app": self.application_id, "guilds": self._settings.discord.guild_ids, "c": payload}
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()

    async def _sync_commands(self) -> None:
        """Register commands only when their definition changed: creation has a daily limit."""
        stamp = Path(self._settings.data_dir) / "discord-commands.sha256"
        digest = self._commands_digest()
        if stamp.is_file() and stamp.read_text().strip() == digest:
            log.info("discord commands unchanged; not re-registering")
            return
        guilds = self._settings.discord.guild_ids
        for guild_id in guilds:
            await self.tree.sync(guild=discord.Object(int(guild_id)))
        if not guilds:
            await self.tree.sync()
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(digest)
        log.info("discord commands registered (%s)", ", ".join(guilds) or "global")

    async def _run_command(
        self, interaction: discord.Interaction, kind: Kind, given: dict[str, Any]
    ) -> None:
        options = {k: v for k, v in given.items() if v is not None}

        async def work() -> None:
            upload = options.pop("image", None)
            data = None
            if upload is not None:
                check_size(upload.size, self._settings.limits)  # before downloading it
                data = await upload.read()
            command = commands.from_options(kind, options)
            request = commands.build_request(
                command, self._origin(interaction), self._settings,
                prompt_overflow=self._prompt_overflow,
            )  # fmt: skip
            request, inputs = attach(request, data, self._settings.limits)
            await self._admit(interaction, request, inputs)

        await self._funnel(interaction, work)

    async def _admit(
        self, interaction: discord.Interaction, request: Request, inputs: Sequence[Artifact]
    ) -> None:
        """Queue it and tell the user where it stands, with a Cancel button while it waits."""
        admitted = await self._admission.admit(request, inputs)
        self._on_admitted()
        view = discord.ui.View(timeout=None)
        if not admitted.job.is_terminal:
            view.add_item(ActionButton(CANCEL, admitted.job.id, "Cancel"))
        await interaction.edit_original_response(
            content=admitted.message + _notes(request.notes), view=view,
            allowed_mentions=NO_MENTIONS,
        )  # fmt: skip

    # --- buttons ---------------------------------------------------------------------------
    async def on_button(self, interaction: discord.Interaction, action: str, job_id: str) -> None:
        async def work() -> None:
            if action == CANCEL:
                await self._actions.cancel(job_id, str(interaction.user.id))
                await self._reply(interaction, messages.cancelled())
                return
            request, inputs = await self._actions.follow_up(
                job_id, Action(action), self._origin(interaction)
            )
            await self._admit(interaction, request, inputs)

        await self._funnel(interaction, work)

    # --- the error funnel ------------------------------------------------------------------
    @staticmethod
    def _origin(interaction: discord.Interaction) -> Origin:
        return Origin(
            platform="discord",
            request_id=str(interaction.id),
            user=str(interaction.user.id),
            channel=str(interaction.channel_id or ""),
            guild=str(interaction.guild_id or ""),
            reply_token=interaction.token,
        )

    async def _funnel(
        self, interaction: discord.Interaction, work: Callable[[], Awaitable[None]]
    ) -> None:
        """Defer within 3 s, then run ``work``; users see their own errors, bugs an apology."""
        try:
            if not interaction.response.is_done():
                await interaction.response.defer(ephemeral=True, thinking=True)
        except discord.HTTPException as exc:  # a re-delivered interaction: already answered
            log.info("interaction %s was already acknowledged (%s)", interaction.id, exc.code)
        try:
            await work()
        except UserError as exc:
            await self._reply(interaction, exc.message)
        except Exception:
            ref = uuid.uuid4().hex
            log.exception(
                "discord interaction %s (user %s, channel %s) failed (ref %s)",
                interaction.id, interaction.user.id, interaction.channel_id, ref[:8],
            )  # fmt: skip
            with contextlib.suppress(Exception):
                await self._reply(interaction, messages.internal_error(ref))

    async def _on_tree_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        cause = getattr(error, "original", error)
        if isinstance(error, app_commands.TransformerError):
            cause = InvalidRequest(
                f"Option value “{messages.shorten(str(error.value))}” is invalid."
            )
        await self._funnel(interaction, lambda: _raise(cause))

    @staticmethod
    async def _reply(interaction: discord.Interaction, text: str) -> None:
        """Replace the deferred (ephemeral) response: by then it has always been acknowledged."""
        await interaction.edit_original_response(content=text, allowed_mentions=NO_MENTIONS)

    # --- the Adapter protocol: see discord_outbox_adapter ----------------------------------
    async def acknowledge(self, ack: Acknowledgement) -> None:
        await self._outbox.acknowledge(ack)

    async def show_progress(self, progress: Progress) -> None:
        await self._outbox.show_progress(progress)

    async def deliver(self, result: Result) -> str:
        return await self._outbox.deliver(result)

    async def report_error(self, job: Job, message: str) -> str:
        return await self._outbox.report_error(job, message)


def _notes(notes: Sequence[str]) -> str:
    return "".join(f"\n- {n}" for n in notes)


async def _raise(exc: BaseException) -> None:
    raise exc


async def open_adapter(deps: AdapterDeps, stack: AsyncExitStack) -> DiscordAdapter:
    """The ``service`` seam: start the client in the background; the stack closes it."""
    client = DiscordAdapter(deps)
    task = asyncio.create_task(client.start(), name="discord")

    def _log_failure(done: asyncio.Task[None]) -> None:
        if not done.cancelled() and done.exception() is not None:
            log.error("discord client stopped: %s", done.exception())

    task.add_done_callback(_log_failure)

    async def _close() -> None:
        await client.close()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(task, 10)

    stack.push_async_callback(_close)
    return client

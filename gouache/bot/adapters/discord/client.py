"""Discord: slash commands and buttons in, ``Request``s out; finished jobs back as messages.

The client *receives* its dependencies (``AdapterDeps``) and does its async set-up in
``setup_hook``, like discord.py's ``examples/advanced_startup.py``. It translates and nothing
else: the command language, limits, queue views and admin rules live in ``bot/``; the slash
command definitions in ``commands``, posting in ``outbox``. A message that replies to one of our
results with a prompt remixes that result (``on_message``: the guild-messages intent, and the
text Discord shows bots of messages that mention them, which a reply does by default). Mentions are disabled on the client
and on every send and edit, because an edit goes back to Discord's default mention rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import discord
from discord import app_commands

from gouache import messages
from gouache.bot import commands
from gouache.bot.actions import ButtonActions
from gouache.bot.adapter import Acknowledgement, AdapterDeps, Progress, Result, parse_press
from gouache.bot.adapters.discord.admin import run_admin
from gouache.bot.adapters.discord.buttons import ActionButton, cancel_view
from gouache.bot.adapters.discord.commands import Choices, build_commands, matching
from gouache.bot.adapters.discord.http import install_redaction
from gouache.bot.adapters.discord.outbox import TOKEN_LIFETIME, DiscordOutbox
from gouache.bot.adapters.discord.text import NO_MENTIONS, clip, escape
from gouache.bot.admin import AdminActions
from gouache.bot.captions import CANCEL, result_job
from gouache.bot.listings import answer
from gouache.bot.queue_view import QueueView
from gouache.bot.uploads import attach, check_size
from gouache.errors import InvalidRequest, UserError
from gouache.request import Kind, Listing, Origin, Request
from gouache.storage.jobs import Artifact, Job

__all__ = ["DiscordAdapter", "TOKEN_LIFETIME", "INVITE_SCOPES", "invite_permissions", "open_adapter"]

log = logging.getLogger(__name__)

_MENTION = re.compile(r"<@!?[0-9]+>")

INVITE_SCOPES = ("bot", "applications.commands")


def invite_permissions() -> discord.Permissions:
    """What the bot needs in a channel: see it, post, attach images, link files, use threads."""
    return discord.Permissions(
        view_channel=True, send_messages=True, send_messages_in_threads=True,
        embed_links=True, attach_files=True,
    )  # fmt: skip


class DiscordAdapter(discord.Client):
    """The Discord side of gouache; ``await adapter.start(token)``, ``await adapter.close()``."""

    platform = "discord"
    can_hide_images = True  # Discord spoilers

    def __init__(self, deps: AdapterDeps, **options: Any) -> None:
        settings, storage = deps.settings, deps.storage
        if settings.discord.application_id:  # else discord.py learns it at login
            options["application_id"] = int(settings.discord.application_id)
        intents = discord.Intents(guilds=True, guild_messages=True, dm_messages=True)
        super().__init__(intents=intents, allowed_mentions=NO_MENTIONS, **options)
        self._settings = settings
        self._storage = storage
        self._actions = ButtonActions(storage, settings.limits)
        self._queue = QueueView(storage, self._actions)
        self._admins = AdminActions(storage, settings)
        self._admission = deps.admission
        self._on_admitted = deps.on_admitted
        self._prompt_overflow = deps.prompt_overflow
        self.tree = app_commands.CommandTree(self)
        self.tree.on_error = self._on_tree_error  # type: ignore[method-assign]
        api_base = (settings.discord.api_base or "").rstrip("/") or None
        self._outbox = DiscordOutbox(self, storage, api_base, deps.artifact_url)
        install_redaction()

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
        for command in build_commands(self._settings, self):
            self.tree.add_command(command)
        for guild_id in self._settings.discord.guild_ids:
            self.tree.copy_global_to(guild=discord.Object(int(guild_id)))
        await self._sync_commands()
        if self.application_id:
            url = discord.utils.oauth_url(
                self.application_id, permissions=invite_permissions(), scopes=INVITE_SCOPES
            )
            log.info("invite gouache to a Discord server: %s", url)

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

    # --- commands (``commands.Handlers``) --------------------------------------------------
    async def run_command(
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

    async def show_queue(self, interaction: discord.Interaction) -> None:
        async def work() -> None:
            text, entries = await self._queue.render(str(interaction.user.id), escape)
            view = cancel_view([(e.job.id, f"Cancel {e.label}") for e in entries])
            await interaction.edit_original_response(
                content=clip(text), view=view, allowed_mentions=NO_MENTIONS
            )

        await self._funnel(interaction, work)

    async def show_listing(
        self, interaction: discord.Interaction, listing: Listing, model: str | None
    ) -> None:
        async def work() -> None:
            name = commands.resolve_model(model or self._settings.default_model, self._settings)
            await self._reply(interaction, clip(answer(listing, self._settings, name)))

        await self._funnel(interaction, work)

    async def cancel_job(self, interaction: discord.Interaction, job: str | None) -> None:
        async def work() -> None:
            await self._queue.cancel(str(interaction.user.id), job)
            await self._reply(interaction, messages.cancelled())

        await self._funnel(interaction, work)

    async def pending_choices(self, interaction: discord.Interaction, current: str) -> Choices:
        entries = await self._queue.entries(str(interaction.user.id))
        return matching([(e.label, e.job.id) for e in entries], current)

    async def admin(
        self, interaction: discord.Interaction, action: str, target: discord.abc.User | None = None
    ) -> None:
        async def work() -> None:
            await self._reply(interaction, await run_admin(self._admins, interaction, action, target))

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
            content=clip(admitted.message + _notes(request.notes)), view=view,
            allowed_mentions=NO_MENTIONS,
        )  # fmt: skip

    # --- buttons ---------------------------------------------------------------------------
    async def on_button(self, interaction: discord.Interaction, action: str, job_id: str) -> None:
        async def work() -> None:
            if action == CANCEL:
                await self._actions.cancel(job_id, str(interaction.user.id))
                await self._reply(interaction, messages.cancelled())
                return
            pressed, index = parse_press(action)
            request, inputs = await self._actions.follow_up(
                job_id, pressed, self._origin(interaction), index
            )
            await self._admit(interaction, request, inputs)

        await self._funnel(interaction, work)

    # --- replies to results ----------------------------------------------------------------
    async def on_message(self, message: discord.Message) -> None:
        """A reply to one of our results with a prompt (or ``upscale``, ``edit ...``): that
        result's first image remixed (``ButtonActions.remix_reply``, which asks ``KINDS``),
        answered with a reply; the result is posted in the channel like any other."""
        replied = message.reference.resolved if message.reference is not None else None
        if (message.author.bot or self.user is None or not isinstance(replied, discord.Message)
                or replied.author.id != self.user.id):  # fmt: skip
            return
        job_id = result_job(getattr(item, "custom_id", None) or ""
                            for row in replied.components for item in getattr(row, "children", ()))  # fmt: skip
        text = _MENTION.sub(" ", message.content).strip()
        if job_id is None or not text:  # not a result of ours, or a reply we cannot read
            return
        origin = Origin(platform="discord", request_id=str(message.id), user=str(message.author.id),
                        channel=str(message.channel.id), guild=str(message.guild.id if message.guild else ""))  # fmt: skip
        try:
            request = commands.build_request(commands.parse_message(text), origin, self._settings,
                                             prompt_overflow=self._prompt_overflow)  # fmt: skip
            request, inputs = await self._actions.remix_reply(job_id, request)
            admitted = await self._admission.admit(request, inputs)
            self._on_admitted()
            answer = admitted.message + _notes(request.notes)
        except UserError as exc:
            answer = escape(exc.message)
        except Exception:
            ref = uuid.uuid4().hex
            log.exception("discord reply %s (user %s) failed (ref %s)", message.id, message.author.id, ref[:8])
            answer = messages.internal_error(ref)
        with contextlib.suppress(discord.HTTPException):
            await message.reply(clip(answer), allowed_mentions=NO_MENTIONS, mention_author=False)

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
            upload_limit=int(interaction.filesize_limit or 0),
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
        except UserError as exc:  # it may echo what they typed (an unknown model's name)
            await self._reply(interaction, escape(exc.message))
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
                messages.invalid_option_value(escape(messages.shorten(str(error.value))))
            )
        await self._funnel(interaction, lambda: _raise(cause))

    @staticmethod
    async def _reply(interaction: discord.Interaction, text: str) -> None:
        """Replace the deferred (ephemeral) response: by then it has always been acknowledged."""
        await interaction.edit_original_response(content=clip(text), allowed_mentions=NO_MENTIONS)

    # --- the Adapter protocol: see ``outbox`` ----------------------------------------------
    async def acknowledge(self, ack: Acknowledgement) -> None:
        await self._outbox.acknowledge(ack)

    async def show_progress(self, progress: Progress) -> None:
        await self._outbox.show_progress(progress)

    async def deliver(self, result: Result) -> str:
        return await self._outbox.deliver(result)

    async def report_error(self, job: Job, message: str) -> str:
        return await self._outbox.report_error(job, message)


def _notes(notes: Sequence[str]) -> str:
    return "".join(f"\n- {escape(n)}" for n in notes)


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

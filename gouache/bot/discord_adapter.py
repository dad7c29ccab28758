"""Discord: slash commands and buttons in, ``Request``s out; finished jobs back as messages.

The client *receives* its dependencies (settings, storage, admission) and does its async
set-up in ``setup_hook``, like discord.py's ``examples/advanced_startup.py``. It translates
and nothing else: the command language, limits and queueing live in ``commands``,
``admission`` and ``storage``. Mentions are disabled on the client and on every send and edit,
because an edit goes back to Discord's default mention rules.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import discord
import yarl
from discord import app_commands
from discord.http import Route, handle_message_parameters
from discord.webhook.async_ import AsyncWebhookAdapter, async_context

from gouache.bot import commands, messages
from gouache.bot.adapter import Acknowledgement, Action, Progress, Result, follow_up
from gouache.bot.admission import Admission
from gouache.bot.chat_render import (
    ASPECT_RATIOS,
    CANCEL,
    delivery_plans,
    error_text,
    progress_text,
    result_text,
)
from gouache.bot.request import Kind, Origin
from gouache.config import Settings
from gouache.errors import InvalidRequest, NotAllowed, TooLarge, UserError
from gouache.storage.base import Storage
from gouache.storage.jobs import ArtifactKind, Job

__all__ = ["DiscordAdapter", "ActionButton", "TOKEN_LIFETIME"]

log = logging.getLogger(__name__)

TOKEN_LIFETIME = 14 * 60.0  # Discord's interaction tokens die at 15 minutes: keep a margin
PROGRESS_EVERY = 3.0  # seconds between progress edits of one message (error 30046 otherwise)
_NO_MENTIONS = discord.AllowedMentions.none()
_TOKEN_IN_URL = re.compile(r"(/(?:webhooks|interactions)/\d+/)[^/?\s'\"]+")


class _RedactTokens(logging.Filter):
    """discord.py logs webhook URLs, and an interaction token in a URL is a credential."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = record.getMessage()
            record.args = ()
        record.msg = _TOKEN_IN_URL.sub(r"\1<token>", str(record.msg))
        return True


class _RoutedWebhooks(AsyncWebhookAdapter):
    """Interaction callbacks and followups go through this; it honours ``api_base``."""

    def __init__(self, api_base: str) -> None:
        super().__init__()
        self._base = api_base

    async def request(self, route: Route, *args: Any, **kwargs: Any) -> Any:
        _rebase(route, self._base)
        return await super().request(route, *args, **kwargs)


def _rebase(route: Route, api_base: str) -> None:
    if route.url.startswith(Route.BASE):
        route.url = api_base + route.url[len(Route.BASE) :]


def _redirect(http: discord.http.HTTPClient, api_base: str) -> None:
    """Send this client's REST calls and gateway to ``api_base`` (a local fake in tests).

    Per instance, not by patching ``Route.BASE``: other clients in the process stay untouched.
    The gateway URL comes from GET /gateway/bot, as Discord documents it.
    """
    real_request, real_ws_connect = http.request, http.ws_connect

    async def request(route: Route, **kwargs: Any) -> Any:
        _rebase(route, api_base)
        return await real_request(route, **kwargs)

    async def ws_connect(url: str, *, compress: int = 0) -> Any:
        _, gateway, _ = await http.get_bot_gateway()
        target = yarl.URL(gateway).with_query(yarl.URL(url).query)
        return await real_ws_connect(str(target), compress=compress)

    http.request = request  # type: ignore[method-assign]
    http.ws_connect = ws_connect  # type: ignore[method-assign]


class ActionButton(
    discord.ui.DynamicItem[discord.ui.Button],
    template=r"gouache:(?P<action>reroll|gif|diversify|cancel):(?P<job_id>[0-9a-fA-F-]{1,64})",
):
    """A persistent button: the job id lives in ``custom_id``, so it works after restarts."""

    def __init__(self, action: str, job_id: str, label: str = "") -> None:
        style = discord.ButtonStyle.danger if action == CANCEL else discord.ButtonStyle.secondary
        super().__init__(
            discord.ui.Button(
                label=label or action.title(), style=style, custom_id=f"gouache:{action}:{job_id}"
            )
        )
        self.action, self.job_id = action, job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str]
    ) -> ActionButton:
        return cls(match["action"], match["job_id"], item.label or "")

    async def callback(self, interaction: discord.Interaction) -> None:
        client = interaction.client
        if isinstance(client, DiscordAdapter):
            await client.on_button(interaction, self.action, self.job_id)


class DiscordAdapter(discord.Client):
    """The Discord side of gouache; ``await adapter.start(token)``, ``await adapter.close()``."""

    platform = "discord"

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        admission: Admission,
        *,
        on_admitted: Callable[[], None] | None = None,
        artifact_url: Callable[[str, str], str] | None = None,
        prompt_overflow: Callable[[str, str], str | None] | None = None,
        **options: Any,
    ) -> None:
        app_id = settings.discord.application_id
        super().__init__(
            intents=discord.Intents(guilds=True),
            allowed_mentions=_NO_MENTIONS,
            application_id=int(app_id) if app_id else None,
            **options,
        )
        self._settings = settings
        self._storage = storage
        self._admission = admission
        self._on_admitted = on_admitted or (lambda: None)
        self._artifact_url = artifact_url
        self._prompt_overflow = prompt_overflow
        self._last_edit: dict[str, float] = {}
        self.tree = app_commands.CommandTree(self)
        self.tree.on_error = self._on_tree_error  # type: ignore[method-assign]
        api_base = (settings.discord.api_base or "").rstrip("/")
        self._webhooks = _RoutedWebhooks(api_base) if api_base else None
        if api_base:
            _redirect(self.http, api_base)
        for name in ("discord.http", "discord.webhook.async_", "discord.gateway", "discord.client"):
            logger = logging.getLogger(name)
            if not any(isinstance(f, _RedactTokens) for f in logger.filters):
                logger.addFilter(_RedactTokens())

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self, token: str | None = None, *, reconnect: bool = True) -> None:
        """Log in and run; tasks spawned from here inherit the routed webhook adapter."""
        with self._routed():
            secret = token or self._settings.discord.token
            value = secret.get_secret_value() if hasattr(secret, "get_secret_value") else secret
            if not value:
                raise ValueError("discord.token is not configured")
            await super().start(str(value), reconnect=reconnect)

    async def setup_hook(self) -> None:
        self.add_dynamic_items(ActionButton)
        self._add_commands()
        await self._sync_commands()

    @contextlib.contextmanager
    def _routed(self) -> Iterator[None]:
        if self._webhooks is None:
            yield
            return
        token = async_context.set(self._webhooks)
        try:
            yield
        finally:
            async_context.reset(token)

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

        for command in (imagine, depth, diversity):
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
            inputs = []
            if upload is not None:
                inputs = [await self._read_upload(upload)]
                options["attachment"] = inputs[0].name
            command = commands.from_options(kind, options)
            request = commands.build_request(
                command, self._origin(interaction), self._settings,
                prompt_overflow=self._prompt_overflow,
            )  # fmt: skip
            admitted = await self._admission.admit(request, inputs)
            self._on_admitted()
            await self._reply(interaction, admitted.message + _notes(request.notes))

        await self._funnel(interaction, work)

    async def _read_upload(self, attachment: discord.Attachment) -> Any:
        from gouache.bot.web_adapter import sniff_upload
        from gouache.storage.jobs import Artifact

        if attachment.size > self._settings.limits.max_upload_bytes:
            raise TooLarge(
                f"The file is {attachment.size:,} bytes; the limit is "
                f"{self._settings.limits.max_upload_bytes:,}."
            )
        data = await attachment.read()
        mime, ext = sniff_upload(data[: self._settings.limits.max_upload_bytes + 1])
        return Artifact("", f"input-0.{ext}", ArtifactKind.INPUT, mime, data)

    # --- buttons ---------------------------------------------------------------------------
    async def on_button(self, interaction: discord.Interaction, action: str, job_id: str) -> None:
        async def work() -> None:
            job = await self._storage.get_job(job_id)
            if action == CANCEL:
                if str(interaction.user.id) != job.user:
                    raise NotAllowed("You can only cancel your own jobs.")
                await self._storage.cancel(job.id)
                await self._reply(interaction, messages.cancelled())
                return
            request = follow_up(
                job.request, Action(action), self._origin(interaction),
                seed=secrets.randbelow(commands.SEED_MAX + 1),
                diversity_count=self._settings.limits.diversity_count,
            )  # fmt: skip
            inputs = []
            if request.attachment:
                inputs = [a for a in await self._storage.artifacts(job.id)
                          if a.kind is ArtifactKind.INPUT]  # fmt: skip
            admitted = await self._admission.admit(request, inputs)
            self._on_admitted()
            await self._reply(interaction, admitted.message)

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
        except discord.HTTPException:  # a re-delivered interaction was already acknowledged
            log.info("interaction %s already acknowledged", interaction.id)
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

    async def _reply(self, interaction: discord.Interaction, text: str) -> None:
        if interaction.response.is_done():
            await interaction.edit_original_response(content=text, allowed_mentions=_NO_MENTIONS)
        else:
            await interaction.response.send_message(
                text, ephemeral=True, allowed_mentions=_NO_MENTIONS
            )

    # --- the Adapter protocol --------------------------------------------------------------
    def _token_alive(self, job: Job) -> bool:
        origin = job.request.origin
        if not origin.reply_token or not origin.request_id.isdigit():
            return False
        born = discord.utils.snowflake_time(int(origin.request_id)).timestamp()
        return time.time() - born < TOKEN_LIFETIME

    def _webhook(self, job: Job) -> discord.Webhook:
        app_id = self.application_id or int(self._settings.discord.application_id or 0)
        return discord.Webhook.partial(app_id, job.request.origin.reply_token, client=self)

    async def _edit_original(self, job: Job, text: str) -> None:
        params = handle_message_parameters(content=text, allowed_mentions=_NO_MENTIONS)
        with self._routed():
            await async_context.get().edit_original_interaction_response(
                self.application_id or 0, job.request.origin.reply_token,
                session=self._webhook(job).session, proxy=self.http.proxy,
                proxy_auth=self.http.proxy_auth, payload=params.payload,
            )  # fmt: skip

    async def acknowledge(self, ack: Acknowledgement) -> None:
        position = ack.position or 0
        text = messages.queued(position, ack.eta_seconds) if position else messages.started()
        if self._token_alive(ack.job):
            await self._edit_original(ack.job, text)

    async def show_progress(self, progress: Progress) -> None:
        job = progress.job
        now = time.monotonic()
        if now - self._last_edit.get(job.id, -PROGRESS_EVERY) < PROGRESS_EVERY:
            return
        if not self._token_alive(job):
            return
        self._last_edit[job.id] = now
        await self._edit_original(job, progress_text(progress.fraction))

    async def deliver(self, result: Result) -> str:
        job = result.job
        self._last_edit.pop(job.id, None)
        view = discord.ui.View(timeout=None)
        for button in result.buttons:
            view.add_item(ActionButton(button.action.value, button.job_id, button.label))
        content = result_text(result)
        error: discord.HTTPException | None = None
        for plan in delivery_plans(result, self._artifact_url):
            files = [discord.File(_bytes_io(d), filename=n, spoiler=result.spoiler)
                     for n, d in plan.files]  # fmt: skip
            try:
                return await self._post(job, content + plan.note, files, view)
            except discord.HTTPException as exc:
                if exc.status != 413:
                    raise
                log.warning("job %s: upload too large (%s); degrading", job.id, plan.label)
                error = exc
        assert error is not None
        raise error

    async def report_error(self, job: Job, message: str) -> str:
        return await self._post(job, error_text(job, message), [], None, ephemeral=True)

    async def _post(
        self, job: Job, content: str, files: Sequence[discord.File],
        view: discord.ui.View | None, *, ephemeral: bool = False,
    ) -> str:  # fmt: skip
        """A followup while the interaction token lives, then a channel message (bot token)."""
        extra: dict[str, Any] = {"view": view} if view is not None else {}
        if self._token_alive(job):
            with self._routed():
                message = await self._webhook(job).send(
                    content, files=list(files), allowed_mentions=_NO_MENTIONS, wait=True,
                    ephemeral=ephemeral, **extra,
                )  # fmt: skip
            return f"discord:webhook:{message.id}"
        channel = self.get_partial_messageable(int(job.request.origin.channel))
        message = await channel.send(
            content, files=list(files), allowed_mentions=_NO_MENTIONS, **extra
        )
        return f"discord:channel:{channel.id}:{message.id}"


def _notes(notes: Sequence[str]) -> str:
    return "".join(f"\n- {n}" for n in notes)


def _bytes_io(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)


async def _raise(exc: BaseException) -> None:
    raise exc

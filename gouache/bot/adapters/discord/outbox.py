"""Discord, outgoing: acknowledgements, progress edits and results, plus the HTTP plumbing.

Results go out as interaction followups while the interaction token lives (15 minutes, so
``TOKEN_LIFETIME`` keeps a margin) and as channel messages with the bot token after that. A
413 is answered by the next, smaller ``chat_render.delivery_plans`` attempt. Every send and
edit passes ``AllowedMentions.none()``: edits fall back to Discord's default mention rules.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import discord
import yarl
from discord.http import Route, handle_message_parameters
from discord.webhook.async_ import AsyncWebhookAdapter, async_context

from gouache import messages
from gouache.bot.adapter import Acknowledgement, Progress, Result
from gouache.bot.captions import CANCEL, delivery_plans, error_text, progress_text, result_text
from gouache.storage.jobs import Job

__all__ = [
    "DiscordOutbox",
    "ActionButton",
    "TOKEN_LIFETIME",
    "NO_MENTIONS",
    "redirect",
    "RedactTokens",
]

log = logging.getLogger(__name__)

TOKEN_LIFETIME = 14 * 60.0  # Discord's interaction tokens die at 15 minutes: keep a margin
PROGRESS_EVERY = 3.0  # seconds between progress edits of one message (error 30046 otherwise)
NO_MENTIONS = discord.AllowedMentions.none()
_TOKEN_IN_URL = re.compile(r"(/(?:webhooks|interactions)/\d+/)[^/?\s'\"]+")
_TOKEN_IN_EVENT = re.compile(r"""(['"]token['"]:\s*['"])[^'"]+""")  # gateway DEBUG dumps


class RedactTokens(logging.Filter):
    """discord.py logs webhook URLs and raw events: an interaction token is a credential."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = record.getMessage()
            record.args = ()
        text = _TOKEN_IN_URL.sub(r"\1<token>", str(record.msg))
        record.msg = _TOKEN_IN_EVENT.sub(r"\1<token>", text)
        return True


class RoutedWebhooks(AsyncWebhookAdapter):
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


def redirect(http: discord.http.HTTPClient, api_base: str) -> None:
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
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> ActionButton:
        label = item.label if isinstance(item, discord.ui.Button) else None
        return cls(match["action"], match["job_id"], label or "")

    async def callback(self, interaction: discord.Interaction) -> None:
        on_button = getattr(interaction.client, "on_button", None)
        if on_button is not None:  # the DiscordAdapter; other clients ignore our buttons
            await on_button(interaction, self.action, self.job_id)


class DiscordOutbox:
    """The Adapter protocol's four methods for one ``discord.Client``."""

    def __init__(
        self,
        client: discord.Client,
        api_base: str | None,
        artifact_url: Callable[[str, str], str | None],
    ) -> None:
        self._client = client
        self._artifact_url = artifact_url
        self._last_edit: dict[str, float] = {}
        self._webhooks = RoutedWebhooks(api_base) if api_base else None
        if api_base:
            redirect(client.http, api_base)

    @contextlib.contextmanager
    def routed(self) -> Iterator[None]:
        """Webhook calls made inside (and tasks started inside) honour ``api_base``."""
        if self._webhooks is None:
            yield
            return
        token = async_context.set(self._webhooks)
        try:
            yield
        finally:
            async_context.reset(token)

    @staticmethod
    def _token_alive(job: Job) -> bool:
        origin = job.request.origin
        if not origin.reply_token or not origin.request_id.isdigit():
            return False
        born = discord.utils.snowflake_time(int(origin.request_id)).timestamp()
        return time.time() - born < TOKEN_LIFETIME

    def _webhook(self, job: Job) -> discord.Webhook:
        """The interaction's own webhook, as ``Interaction.followup`` builds it (type 3)."""
        webhook = discord.Webhook.partial(
            self._client.application_id or 0, job.request.origin.reply_token, client=self._client
        )
        webhook.type = discord.WebhookType.application  # allows ephemeral followups
        return webhook

    async def _edit_original(self, job: Job, text: str) -> None:
        params = handle_message_parameters(content=text, allowed_mentions=NO_MENTIONS)
        with self.routed():
            await async_context.get().edit_original_interaction_response(
                self._client.application_id or 0, job.request.origin.reply_token,
                session=self._webhook(job).session, proxy=self._client.http.proxy,
                proxy_auth=self._client.http.proxy_auth, payload=params.payload,
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
            with self.routed():
                message = await self._webhook(job).send(
                    content, files=list(files), allowed_mentions=NO_MENTIONS, wait=True,
                    ephemeral=ephemeral, **extra,
                )  # fmt: skip
            return f"discord:webhook:{message.id}"
        channel = self._client.get_partial_messageable(int(job.request.origin.channel))
        posted = await channel.send(
            content, files=list(files), allowed_mentions=NO_MENTIONS, **extra
        )
        return f"discord:channel:{channel.id}:{posted.id}"


def _bytes_io(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)

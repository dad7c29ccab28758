"""Slack: slash commands, mentions, the /depth modal, shortcuts and buttons in; threads out.

Listeners are slack-bolt ``AsyncApp`` ones that ``ack()`` first (Slack waits 3 s), then
translate: text -> ``commands.parse_arguments`` (a slash command or the modal: the kind is
known) or ``parse_text`` (a mention) -> ``build_request`` -> admission; ``/help`` and ``/loras``
(``request.LISTINGS``, also ``@gouache help``) are answered from ``bot/listings``. The same app
runs over Socket Mode (``socket.py``, when ``slack.app_token`` is set) or signed HTTP
(``http.py``). A request Slack re-sends (``X-Slack-Retry-Num``, an envelope's
``retry_attempt``) carries the id of one already seen and is answered by ``_dedupe`` with no
work at all, so a retried mention never downloads its file twice; a retry of an id this
process never saw (it was down) is worked normally and storage deduplicates the job on the
platform's id.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.response import BoltResponse
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from gouache import messages
from gouache.bot import commands
from gouache.bot.actions import ButtonActions
from gouache.bot.adapter import Acknowledgement, AdapterDeps, Progress, Result, parse_press
from gouache.bot.adapters.slack import modal, replies
from gouache.bot.adapters.slack.blocks import (
    slack_blocks,
    slack_caption,
    slack_escape,
    slack_markdown,
)
from gouache.bot.adapters.slack.budget import UpdateBudget
from gouache.bot.adapters.slack.files import download
from gouache.bot.adapters.slack.http import SLACK_PATH, SignedEndpoint
from gouache.bot.adapters.slack.socket import SocketConnection
from gouache.bot.adapters.slack.threads import Threads
from gouache.bot.captions import CANCEL, error_text, parse_action_id, progress_text
from gouache.bot.listings import answer
from gouache.bot.uploads import attach
from gouache.errors import InvalidRequest, UserError
from gouache.request import KINDS, LISTINGS, Kind, Listing, Origin, Request
from gouache.storage.jobs import Artifact, ArtifactKind, Job

__all__ = ["SlackAdapter", "open_adapter", "SLACK_PATH", "COMMANDS"]

log = logging.getLogger(__name__)

# What the manifest must list: the commands of request.KINDS, then the listings.
COMMANDS = (*(f"/{kind.value}" for kind in KINDS), *(f"/{listing.value}" for listing in LISTINGS))
_LEADING_MENTIONS = re.compile(r"^(?:\s*<@[A-Z0-9]+(?:\|[^>]*)?>)+\s*")
_FILE_HOSTS = {"files.slack.com"}
_SEEN = 10_000  # ids remembered for retries: hours of traffic for one bot
_SHOWN = (ArtifactKind.COMPOSITE, ArtifactKind.IMAGE, ArtifactKind.DEPTH, ArtifactKind.GIF)


def _unescape(text: str) -> str:
    """Slack sends ``& < >`` escaped in command and message text."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


class SlackAdapter:
    """The Slack side of gouache; ``open_adapter`` connects it, ``close()`` at exit."""

    platform = "slack"
    can_hide_images = False  # Slack has no spoilers: ``screen`` withholds flagged images

    def __init__(self, deps: AdapterDeps) -> None:
        settings, slack = deps.settings, deps.settings.slack
        if slack.bot_token is None or slack.mode is None:
            raise ValueError("slack.bot_token and slack.app_token or slack.signing_secret are needed")
        self._settings = settings
        self._actions = ButtonActions(deps.storage, settings.limits)
        self._admission = deps.admission
        self._on_admitted = deps.on_admitted
        self._prompt_overflow = deps.prompt_overflow
        self._token = slack.bot_token.get_secret_value()
        base = (slack.api_base or "https://slack.com/api").rstrip("/") + "/"
        self._file_hosts = _FILE_HOSTS | ({urlsplit(base).netloc} if slack.api_base else set())
        self.client = AsyncWebClient(token=self._token, base_url=base)
        self.client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=3))
        self.budget = UpdateBudget(slack.updates_per_minute)
        self.threads = Threads(self.client, deps.storage, self.budget, slack.progress_seconds)
        self.app = AsyncApp(client=self.client, logger=log, request_verification_enabled=False,
                            raise_error_for_unhandled_request=False)  # fmt: skip
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.endpoint = (SignedEndpoint(self.app, slack.signing_secret.get_secret_value())
                         if slack.mode == "http" and slack.signing_secret else None)  # fmt: skip
        self.socket = (SocketConnection(self.app, slack.app_token.get_secret_value())
                       if slack.mode == "socket" and slack.app_token else None)  # fmt: skip
        self._register()

    def _register(self) -> None:
        self.app.middleware(self._dedupe)
        for name in COMMANDS:
            self.app.command(name)(self._on_command)
        self.app.event("app_mention")(self._on_mention)
        self.app.event("message")(self._on_thread_reply)
        self.app.action(re.compile(r"^gouache:"))(self._on_action)
        self.app.view(modal.CALLBACK_ID)(self._on_submit)
        for shortcut in modal.SHORTCUTS:
            self.app.shortcut(shortcut)(self._on_shortcut)
        self.app.error(self._on_bolt_error)

    async def close(self) -> None:
        if self.socket is not None:
            await self.socket.close()

    def routes(self) -> list[web.RouteDef]:
        """POST /slack/events in HTTP mode; nothing in Socket Mode (the bot dials out)."""
        return self.endpoint.routes() if self.endpoint is not None else []

    # --- listeners -------------------------------------------------------------------------
    async def _dedupe(self, body: dict[str, Any], next: Callable[[], Awaitable[None]]) -> Any:
        """Answer a request whose event or trigger id this process already received (a retry
        or a re-sent envelope) without doing anything again."""
        key = str(body.get("event_id") or body.get("trigger_id") or "")
        if key and key in self._seen:
            log.info("slack re-sent %s: acknowledged, not worked again", key[:24])
            return BoltResponse(status=200, body="")
        if key:
            self._seen[key] = None
            while len(self._seen) > _SEEN:
                self._seen.popitem(last=False)
        await next()
        return None

    async def _on_command(self, ack: Any, body: dict[str, Any]) -> None:
        await ack()
        origin = self._origin(body, body.get("user_id"), body.get("channel_id"), body.get("team_id"))
        text = _unescape(str(body.get("text", "")))
        name = str(body.get("command", "")).lstrip("/")
        if name in {listing.value for listing in LISTINGS}:
            await self._funnel(origin, lambda: self._list(origin, Listing(name), text))
            return
        kind = Kind(name)

        async def work() -> None:
            if KINDS[kind].needs_file:  # a file: only a modal can ask for one
                view = modal.file_view(kind, text, channel=origin.channel,
                                       response_url=origin.reply_token)  # fmt: skip
                await self.client.views_open(trigger_id=str(body.get("trigger_id")), view=view)
                return
            await self._admit(self._build(commands.parse_arguments(kind, text), origin), [])

        await self._funnel(origin, work)

    async def _on_shortcut(self, ack: Any, body: dict[str, Any]) -> None:
        """"Use as depth map" or "Remix this image" on a message: the /depth or the image
        modal, that message's image chosen."""
        await ack()
        origin = self._origin(body, body.get("user", {}).get("id"),
                              body.get("channel", {}).get("id"), body.get("team", {}).get("id"))  # fmt: skip

        async def work() -> None:
            file = modal.image_file(body.get("message") or {})
            if file is None:
                raise InvalidRequest(replies.NO_IMAGE_ON_MESSAGE)
            kind = modal.SHORTCUTS.get(str(body.get("callback_id")), Kind.DEPTH)
            view = modal.file_view(kind, "", channel=origin.channel, response_url=origin.reply_token,
                                   file=file)  # fmt: skip
            await self.client.views_open(trigger_id=str(body.get("trigger_id")), view=view)

        await self._funnel(origin, work)

    async def _on_submit(self, ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        """The modal's values: typing mistakes are shown in the modal, the rest afterwards."""
        sub = modal.read_submission(view)
        user = str(body.get("user", {}).get("id", ""))
        origin = Origin(platform="slack", request_id=f"view:{view.get('id') or uuid.uuid4().hex}",
                        user=user, channel=sub.channel or user,
                        guild=str(body.get("team", {}).get("id", "")),
                        reply_token=sub.response_url)  # fmt: skip
        try:
            request = self._build(commands.parse_arguments(sub.kind, sub.text), origin)
        except UserError as exc:
            await ack(response_action="errors", errors={"prompt": exc.message[:150]})
            return
        if not sub.files:
            depth = KINDS[sub.kind].depth_map != "none"
            await ack(response_action="errors",
                      errors={"file": replies.ATTACH_DEPTH if depth else replies.ATTACH_IMAGE})  # fmt: skip
            return
        await ack()

        async def work() -> None:
            data = await download(sub.files[0], self._token, self._settings.limits, self._file_hosts)
            await self._admit(*attach(request, data, self._settings.limits))

        await self._funnel(origin, work)

    async def _on_mention(self, ack: Any, body: dict[str, Any], event: dict[str, Any]) -> None:
        await ack()
        origin = Origin(
            platform="slack",
            request_id=str(body.get("event_id") or event.get("event_ts") or uuid.uuid4().hex),
            user=str(event.get("user", "")),
            channel=str(event.get("channel", "")),
            guild=str(body.get("team_id", "")),
        )

        async def work() -> None:
            text = _LEADING_MENTIONS.sub("", _unescape(str(event.get("text", ""))))
            listed = commands.parse_listing(text, bare=True)
            if listed is not None:  # "@gouache help", "@gouache loras sdxl"
                await self._list(origin, *listed)
                return
            first, *rest = text.split(maxsplit=1) or [""]
            if first.lower() in {k.value for k in Kind}:  # "@gouache depth a hill": /depth
                command = commands.parse_arguments(Kind(first.lower()), " ".join(rest))
            else:
                command = commands.parse_text(text)
            request = self._build(command, origin)
            files = event.get("files") or []
            data = None
            if files:
                data = await download(files[0], self._token, self._settings.limits,
                                      self._file_hosts)  # fmt: skip
            job = await self._admit(*attach(request, data, self._settings.limits),
                                    quiet_if_known=True)  # fmt: skip
            if job is not None:
                thread = str(event.get("thread_ts") or event.get("ts") or "")
                await self.threads.begin(job.id, origin.channel, thread)

        await self._funnel(origin, work)

    async def _on_thread_reply(self, ack: Any, body: dict[str, Any], event: dict[str, Any]) -> None:
        """A reply in the thread of one of our results, with a prompt (or ``upscale``,
        ``edit ...``): that result's first image remixed (``ButtonActions.remix_reply``, which
        asks ``KINDS``), the new job delivered into the same thread. Anything else that Slack
        sends as a message event (our own posts, edits, files, top-level messages, mentions of
        the bot, which ``app_mention`` answers, threads that are not a result's) is ignored."""
        await ack()
        channel, thread = str(event.get("channel", "")), str(event.get("thread_ts") or "")
        text = _unescape(str(event.get("text", ""))).strip()
        bots = {str(a.get("user_id")) for a in body.get("authorizations") or [] if a.get("user_id")}
        if (event.get("subtype") or event.get("bot_id") or not thread or thread == event.get("ts")
                or not text or any(f"<@{bot}" in text for bot in bots)):  # fmt: skip
            return
        result = await self._actions.job_in_thread("slack", channel, thread)
        if result is None:
            return
        origin = Origin(platform="slack", request_id=str(body.get("event_id") or event.get("ts")),
                        user=str(event.get("user", "")), channel=channel, guild=str(body.get("team_id", "")))  # fmt: skip

        async def work() -> None:
            request = self._build(commands.parse_message(text), origin)
            job = await self._admit(*await self._actions.remix_reply(result.id, request), quiet_if_known=True)
            if job is not None:
                await self.threads.begin(job.id, channel, thread)

        await self._funnel(origin, work)

    async def _on_action(self, ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        origin = self._origin(body, body.get("user", {}).get("id"),
                              body.get("channel", {}).get("id"), body.get("team", {}).get("id"))  # fmt: skip

        async def work() -> None:
            parsed = parse_action_id(str(action.get("value") or action.get("action_id", "")))
            if parsed is None:
                raise InvalidRequest(messages.UNKNOWN_BUTTON)
            name, job_id = parsed
            if name == CANCEL:
                await self._actions.cancel(job_id, origin.user)
                await self._tell(origin, messages.cancelled())
                return
            pressed, index = parse_press(name)
            request, inputs = await self._actions.follow_up(job_id, pressed, origin, index)
            await self._admit(request, inputs)

        await self._funnel(origin, work)

    async def _on_bolt_error(self, error: Exception, body: dict[str, Any]) -> None:
        log.error("slack listener failed: %s", type(error).__name__, exc_info=error)

    async def _list(self, origin: Origin, listing: Listing, text: str) -> None:
        """``/help``, ``/loras``: the listing for the model named (the default when none)."""
        model = commands.listing_model(listing, text, self._settings)
        await self._tell(origin, slack_markdown(answer(listing, self._settings, model)))

    # --- translating -----------------------------------------------------------------------
    def _origin(self, body: dict[str, Any], user: Any, channel: Any, team: Any) -> Origin:
        return Origin(
            platform="slack",
            request_id=str(body.get("trigger_id") or uuid.uuid4().hex),
            user=str(user or ""),
            channel=str(channel or ""),
            guild=str(team or ""),
            reply_token=str(body.get("response_url", "")),
        )

    def _build(self, command: commands.Command, origin: Origin) -> Request:
        return commands.build_request(
            command, origin, self._settings, prompt_overflow=self._prompt_overflow
        )

    async def _admit(
        self, request: Request, inputs: list[Artifact], *, quiet_if_known: bool = False
    ) -> Job | None:
        """Queue the request and tell the user; the job when it is new."""
        admitted = await self._admission.admit(request, inputs)
        self._on_admitted()
        if admitted.created or not quiet_if_known:
            notes = "".join(f"\n- {slack_escape(n)}" for n in request.notes)
            job = admitted.job
            cancel = [] if job.is_terminal else [(CANCEL, job.id, "Cancel")]
            await self._tell(request.origin, admitted.message + notes, cancel)
        return admitted.job if admitted.created else None

    async def _funnel(self, origin: Origin, work: Callable[[], Awaitable[None]]) -> None:
        """Users see their own errors; anything else is logged and answered with an apology."""
        try:
            await work()
        except UserError as exc:
            await self._tell(origin, slack_escape(exc.message))
        except Exception:
            ref = uuid.uuid4().hex
            log.exception(
                "slack request %s (user %s, channel %s) failed (ref %s)",
                origin.request_id[:40], origin.user, origin.channel, ref[:8],
            )  # fmt: skip
            try:
                await self._tell(origin, messages.internal_error(ref))
            except Exception:
                log.warning("could not tell user %s about ref %s", origin.user, ref[:8])

    async def _tell(
        self, origin: Origin, text: str, buttons: Sequence[tuple[str, str, str]] = ()
    ) -> None:
        """An ephemeral reply (``text`` is already escaped): response_url when we have one."""
        blocks = slack_blocks(text, buttons)
        if origin.reply_token:
            webhook = AsyncWebhookClient(origin.reply_token)
            response = await webhook.send(
                text=text, blocks=blocks, response_type="ephemeral", replace_original=False
            )
            if response.status_code < 400:
                return
            log.info("response_url refused (%d); replying another way", response.status_code)
        await self.threads.tell(replace(origin, reply_token=""), text)

    # --- the Adapter protocol --------------------------------------------------------------
    async def acknowledge(self, ack: Acknowledgement) -> None:
        position = ack.position or 0
        text = messages.queued(position, ack.eta_seconds) if position else messages.started()
        await self._tell(ack.job.request.origin, text)

    async def show_progress(self, progress: Progress) -> None:
        job = progress.job
        prompt = slack_escape(messages.shorten(job.request.prompt, 80))
        await self.threads.progress(job, f"{progress_text(progress.fraction)} “{prompt}”")

    async def deliver(self, result: Result) -> str:
        job = result.job
        uploads = [{"content": a.data, "filename": a.name, "title": a.name}
                   for a in result.artifacts if a.kind in _SHOWN]  # fmt: skip
        caption = slack_caption(result)
        text = f"Done: “{slack_escape(messages.shorten(job.request.prompt, 80))}”" if uploads else caption
        return await self.threads.finish(job, text, slack_blocks(text, result.buttons), uploads,
                                         caption)  # fmt: skip

    async def report_error(self, job: Job, message: str) -> str:
        text = slack_escape(error_text(job, message))
        return await self.threads.finish(job, text, slack_blocks(text))


async def open_adapter(deps: AdapterDeps, stack: AsyncExitStack) -> SlackAdapter:
    """The ``service`` seam: Socket Mode connects now (in the background); HTTP mode's
    ``routes()`` are mounted by the web server."""
    adapter = SlackAdapter(deps)
    stack.push_async_callback(adapter.close)
    if adapter.socket is not None:
        adapter.socket.start()
    return adapter

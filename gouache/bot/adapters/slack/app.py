"""Slack: slash commands, app mentions and buttons in, ``Request``s out; results back out.

Listeners are slack-bolt ``AsyncApp`` ones that ``ack()`` first (Slack waits 3 s), then
translate: text -> ``commands.parse_text`` -> ``build_request`` -> admission. Re-sent events
are harmless because the platform's own id (trigger id, event id) is the request id storage
deduplicates on. The HTTP endpoint checks the timestamp and signature itself before bolt sees
the request: bolt 1.30 answers 500 to a non-numeric timestamp and logs the body of a request
with a bad signature.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from gouache import messages
from gouache.bot import commands
from gouache.bot.actions import ButtonActions
from gouache.bot.adapter import Acknowledgement, Action, AdapterDeps, Progress, Result
from gouache.bot.adapters.slack.blocks import slack_blocks, slack_escape
from gouache.bot.captions import (
    CANCEL,
    error_text,
    parse_action_id,
    progress_text,
    result_text,
)
from gouache.bot.uploads import attach, check_size
from gouache.errors import InvalidRequest, UserError
from gouache.request import KINDS, Kind, Origin, Request
from gouache.storage.jobs import Artifact, ArtifactKind, Job

if TYPE_CHECKING:
    pass

__all__ = ["SlackAdapter", "slack_routes", "open_adapter", "SLACK_PATH"]

log = logging.getLogger(__name__)

SLACK_PATH = "/slack/events"
PROGRESS_EVERY = 3.0
_COMMANDS = {f"/{kind.value}": kind for kind in KINDS}
_LEADING_MENTIONS = re.compile(r"^(?:\s*<@[A-Z0-9]+(?:\|[^>]*)?>)+\s*")
_FILE_HOSTS = {"files.slack.com"}
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_DEPTH_NEEDS_FILE = (
    "Slash commands can't carry files: post your depth map or photo in a message that "
    "mentions me, like “@gouache /depth a mountain lake”."
)


def _unescape(text: str) -> str:
    """Slack sends ``& < >`` escaped in command and message text."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


class SlackAdapter:
    """The Slack side of gouache; mount ``handle`` at POST /slack/events, ``close()`` at exit."""

    platform = "slack"
    can_hide_images = False  # Slack has no spoilers: flagged images are withheld

    def __init__(self, deps: AdapterDeps) -> None:
        settings, storage = deps.settings, deps.storage
        slack = settings.slack
        if slack.bot_token is None or slack.signing_secret is None:
            raise ValueError("slack.bot_token and slack.signing_secret must both be configured")
        self._settings = settings
        self._storage = storage
        self._actions = ButtonActions(storage, settings.limits)
        self._admission = deps.admission
        self._on_admitted = deps.on_admitted
        self._prompt_overflow = deps.prompt_overflow
        self._token = slack.bot_token.get_secret_value()
        self._verifier = SignatureVerifier(slack.signing_secret.get_secret_value())
        base = (slack.api_base or "https://slack.com/api").rstrip("/") + "/"
        self._file_hosts = _FILE_HOSTS | ({urlsplit(base).netloc} if slack.api_base else set())
        self.client = AsyncWebClient(token=self._token, base_url=base)
        self.client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=3))
        self.app = AsyncApp(
            client=self.client,
            signing_secret=slack.signing_secret.get_secret_value(),
            logger=log,
            raise_error_for_unhandled_request=False,
        )
        self._status: dict[str, tuple[str, str, float]] = {}  # job id -> (channel, ts, when)
        for name in _COMMANDS:
            self.app.command(name)(self._on_command)
        self.app.event("app_mention")(self._on_mention)
        self.app.action(re.compile(r"^gouache:"))(self._on_action)
        self.app.error(self._on_bolt_error)

    async def close(self) -> None:
        """Nothing pooled is held: the SDK opens a session per call (no session passed)."""

    def routes(self) -> list[web.RouteDef]:
        """POST /slack/events, for the one aiohttp server (``service`` collects these)."""
        return slack_routes(self)

    # --- the HTTP endpoint -----------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        """POST /slack/events: verify before bolt parses or logs anything."""
        body = await request.read()
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        if not _TIMESTAMP.fullmatch(timestamp):  # "soon", "²" or 5,000 digits: never int() it
            return web.json_response({"error": "invalid timestamp"}, status=400)
        if not self._verifier.is_valid(body, timestamp, signature):
            log.warning(
                "rejected a Slack request with a bad or stale signature (%d bytes)", len(body)
            )
            return web.json_response({"error": "invalid request"}, status=401)
        bolt_request = AsyncBoltRequest(
            body=body.decode("utf-8", errors="replace"),
            query=request.query_string,
            headers={k: request.headers.getall(k) for k in request.headers},
        )
        return await to_aiohttp_response(await self.app.async_dispatch(bolt_request))

    # --- listeners -------------------------------------------------------------------------
    async def _on_command(self, ack: Any, body: dict[str, Any], respond: Any) -> None:
        await ack()
        origin = Origin(
            platform="slack",
            request_id=str(body.get("trigger_id") or uuid.uuid4().hex),
            user=str(body.get("user_id", "")),
            channel=str(body.get("channel_id", "")),
            guild=str(body.get("team_id", "")),
            reply_token=str(body.get("response_url", "")),
        )

        async def work() -> None:
            text = f"{body.get('command', '')} {_unescape(str(body.get('text', '')))}"
            request = self._build(text, origin)
            if request.kind is Kind.DEPTH:
                raise InvalidRequest(_DEPTH_NEEDS_FILE)
            await self._admit(request, [])

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
            words = text.split()
            if words and words[0].lower() in {k.value for k in Kind}:
                text = "/" + text  # "@gouache depth a hill" reads like "/depth a hill"
            files = event.get("files") or []
            data = await self._download(files[0]) if files else None
            request, inputs = attach(self._build(text, origin), data, self._settings.limits)
            await self._admit(request, inputs, quiet_if_known=True)

        await self._funnel(origin, work)

    async def _on_action(self, ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        origin = Origin(
            platform="slack",
            request_id=str(body.get("trigger_id") or uuid.uuid4().hex),
            user=str(body.get("user", {}).get("id", "")),
            channel=str(body.get("channel", {}).get("id", "")),
            guild=str(body.get("team", {}).get("id", "")),
            reply_token=str(body.get("response_url", "")),
        )

        async def work() -> None:
            parsed = parse_action_id(str(action.get("value") or action.get("action_id", "")))
            if parsed is None:
                raise InvalidRequest("That button is not one of mine.")
            name, job_id = parsed
            if name == CANCEL:
                await self._actions.cancel(job_id, origin.user)
                await self._tell(origin, messages.cancelled())
                return
            request, inputs = await self._actions.follow_up(job_id, Action(name), origin)
            await self._admit(request, inputs)

        await self._funnel(origin, work)

    async def _on_bolt_error(self, error: Exception, body: dict[str, Any]) -> None:
        log.error("slack listener failed: %s", type(error).__name__, exc_info=error)

    # --- translating -----------------------------------------------------------------------
    def _build(self, text: str, origin: Origin) -> Request:
        command = commands.parse_text(text)
        return commands.build_request(
            command, origin, self._settings, prompt_overflow=self._prompt_overflow
        )

    async def _admit(
        self, request: Request, inputs: list[Artifact], *, quiet_if_known: bool = False
    ) -> None:
        admitted = await self._admission.admit(request, inputs)
        self._on_admitted()
        if admitted.created or not quiet_if_known:  # a retried event was answered already
            notes = "".join(f"\n- {slack_escape(n)}" for n in request.notes)
            job = admitted.job
            cancel = [] if job.is_terminal else [(CANCEL, job.id, "Cancel")]
            await self._tell(request.origin, admitted.message + notes, cancel)

    async def _download(self, file: dict[str, Any]) -> bytes:
        """The first attached file, from Slack's file host only, with a byte cap."""
        limit = self._settings.limits.max_upload_bytes
        url = str(file.get("url_private_download") or file.get("url_private") or "")
        if urlsplit(url).netloc not in self._file_hosts:
            raise InvalidRequest("I can only read files uploaded to Slack.")
        check_size(int(file.get("size") or 0), self._settings.limits)
        headers = {"Authorization": f"Bearer {self._token}"}
        async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
            resp.raise_for_status()
            data = await resp.content.read(limit + 1)
        check_size(len(data), self._settings.limits)
        return data

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
                origin.request_id, origin.user, origin.channel, ref[:8],
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
            await webhook.send(
                text=text, blocks=blocks, response_type="ephemeral", replace_original=False
            )
        else:
            await self.client.chat_postEphemeral(
                channel=origin.channel, user=origin.user, text=text, blocks=blocks
            )

    # --- the Adapter protocol --------------------------------------------------------------
    async def acknowledge(self, ack: Acknowledgement) -> None:
        position = ack.position or 0
        text = messages.queued(position, ack.eta_seconds) if position else messages.started()
        await self._tell(ack.job.request.origin, text)

    async def show_progress(self, progress: Progress) -> None:
        job = progress.job
        now = time.monotonic()
        text = f"{progress_text(progress.fraction)} “{slack_escape(messages.shorten(job.request.prompt, 80))}”"
        known = self._status.get(job.id)
        if known is None:
            response = await self.client.chat_postMessage(
                channel=job.request.origin.channel, text=text, blocks=slack_blocks(text)
            )
            self._status[job.id] = (str(response["channel"]), str(response["ts"]), now)
        elif now - known[2] >= PROGRESS_EVERY:
            await self.client.chat_update(channel=known[0], ts=known[1], text=text,
                                          blocks=slack_blocks(text))  # fmt: skip
            self._status[job.id] = (known[0], known[1], now)

    async def deliver(self, result: Result) -> str:
        job = result.job
        caption = result_text(result, slack_escape)
        uploads = [
            {"content": a.data, "filename": a.name, "title": a.name}
            for a in result.artifacts
            if a.kind in (ArtifactKind.IMAGE, ArtifactKind.DEPTH, ArtifactKind.GIF)
        ]
        text = caption
        if uploads:
            await self.client.files_upload_v2(
                channel=job.request.origin.channel, file_uploads=uploads, initial_comment=caption
            )
            text = f"Done: “{slack_escape(messages.shorten(job.request.prompt, 80))}”"
        return await self._final(job, text, slack_blocks(text, result.buttons))

    async def report_error(self, job: Job, message: str) -> str:
        text = slack_escape(error_text(job, message))
        return await self._final(job, text, slack_blocks(text))

    async def _final(self, job: Job, text: str, blocks: list[dict[str, Any]]) -> str:
        """Replace the progress message when there is one, else post a new message."""
        status = self._status.pop(job.id, None)
        if status is not None:
            await self.client.chat_update(channel=status[0], ts=status[1], text=text, blocks=blocks)
            return f"slack:{status[0]}:{status[1]}"
        response = await self.client.chat_postMessage(
            channel=job.request.origin.channel, text=text, blocks=blocks
        )
        return f"slack:{response['channel']}:{response['ts']}"


def slack_routes(adapter: SlackAdapter) -> list[web.RouteDef]:
    """What the web app mounts: ``app.add_routes(slack_routes(adapter))``."""
    return [web.post(SLACK_PATH, adapter.handle)]


async def open_adapter(deps: AdapterDeps, stack: AsyncExitStack) -> SlackAdapter:
    """The ``service`` seam: Slack calls us over HTTP, so there is nothing to start.

    The web server mounts ``adapter.routes()``.
    """
    adapter = SlackAdapter(deps)
    stack.push_async_callback(adapter.close)
    return adapter

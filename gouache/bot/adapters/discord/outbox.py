"""Discord, outgoing: acknowledgements, progress edits, results and errors.

Results go out as interaction followups while the interaction token lives (15 minutes, so
``TOKEN_LIFETIME`` keeps a margin) and as channel messages with the bot token after that,
packed by ``upload_plans`` (10 files and the upload limit per message; 413 -> re-encode -> links).
Errors go to their owner only: an ephemeral followup while the token lives, else a DM; never a
public message carrying their prompt. Every send and edit passes ``AllowedMentions.none()``:
edits fall back to Discord's default mention rules.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import discord
from discord.http import handle_message_parameters
from discord.webhook.async_ import async_context

from gouache import messages
from gouache.bot.adapter import Acknowledgement, Progress, Result
from gouache.bot.adapters.discord.buttons import result_view
from gouache.bot.adapters.discord.http import RoutedWebhooks, redirect
from gouache.bot.adapters.discord.text import MAX_CONTENT, NO_MENTIONS, chunks, clip, escape
from gouache.bot.adapters.discord.upload_plans import DEFAULT_LIMIT, STEPS, Upload, plan, reencode
from gouache.bot.captions import progress_text, result_text
from gouache.storage.base import Storage
from gouache.storage.jobs import ArtifactKind, Job

__all__ = ["DiscordOutbox", "TOKEN_LIFETIME", "PROGRESS_EVERY"]

log = logging.getLogger(__name__)

TOKEN_LIFETIME = 14 * 60.0  # Discord's interaction tokens die at 15 minutes: keep a margin
PROGRESS_EVERY = 3.0  # seconds between progress edits of one message (error 30046 otherwise)
_SHOWN = (ArtifactKind.IMAGE, ArtifactKind.DEPTH, ArtifactKind.GIF)  # in posting order
_POSTED = "discord_posted"  # delivery state: message index -> ref of what is already posted


class DiscordOutbox:
    """The Adapter protocol's four methods for one ``discord.Client``."""

    def __init__(
        self,
        client: discord.Client,
        storage: Storage,
        api_base: str | None,
        artifact_url: Callable[[str, str], str | None],
    ) -> None:
        self._client = client
        self._storage = storage
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

    # --- the interaction token -------------------------------------------------------------
    @staticmethod
    def token_alive(job: Job) -> bool:
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
        params = handle_message_parameters(content=clip(text), allowed_mentions=NO_MENTIONS)
        with self.routed():
            await async_context.get().edit_original_interaction_response(
                self._client.application_id or 0, job.request.origin.reply_token,
                session=self._webhook(job).session, proxy=self._client.http.proxy,
                proxy_auth=self._client.http.proxy_auth, payload=params.payload,
            )  # fmt: skip

    def upload_limit(self, job: Job) -> int:
        """Bytes per message: what the interaction said, or the guild's limit for channel posts."""
        origin = job.request.origin
        if self.token_alive(job) and origin.upload_limit > 0:
            return origin.upload_limit
        guild = self._client.get_guild(int(origin.guild)) if origin.guild.isdigit() else None
        return guild.filesize_limit if guild is not None else DEFAULT_LIMIT

    # --- acknowledgements and progress -----------------------------------------------------
    async def acknowledge(self, ack: Acknowledgement) -> None:
        position = ack.position or 0
        text = messages.queued(position, ack.eta_seconds) if position else messages.started()
        if self.token_alive(ack.job):
            await self._edit_original(ack.job, text)

    async def show_progress(self, progress: Progress) -> None:
        job = progress.job
        now = time.monotonic()
        if now - self._last_edit.get(job.id, -PROGRESS_EVERY) < PROGRESS_EVERY:
            return
        if not self.token_alive(job):
            return
        self._last_edit[job.id] = now
        await self._edit_original(job, progress_text(progress.fraction))

    # --- results ---------------------------------------------------------------------------
    async def deliver(self, result: Result) -> str:
        """Caption and buttons with the first files; more messages when files do not fit one.

        Each message posted is recorded in the job's delivery state, so a retry (or a restarted
        bot) after a later message failed posts only what is missing.
        """
        job = result.job
        self._last_edit.pop(job.id, None)
        limit = self.upload_limit(job)
        shown = sorted((a for a in result.artifacts if a.kind in _SHOWN),
                       key=lambda a: (_SHOWN.index(a.kind), a.index or 0, a.name))  # fmt: skip
        batches, left = plan([Upload(a.name, a.name, a.data) for a in shown], limit)
        state = await self._storage.delivery_state(job.id)
        sent: dict[str, str] = dict(state.get(_POSTED, {}))  # message index -> ref

        async def record(index: int, ref: str) -> None:
            sent[str(index)] = ref
            await self._storage.set_delivery_state(job.id, {**state, _POSTED: sent})

        caption = result_text(result, escape)
        total = max(1, len(batches))
        for i in range(total):
            if str(i) in sent:  # posted before a later message failed
                continue
            content = caption if i == 0 else f"({i + 1}/{total})"
            view = result_view(result.buttons) if i == 0 and result.buttons else None
            files = batches[i] if batches else []
            ref, links = await self._post_fitting(job, content, files, view, result.hidden, limit)
            await record(i, ref)
            left += links
        if left:
            for j, text in enumerate(chunks(self._links_text(job, left)), start=total):
                if str(j) not in sent:
                    await record(j, await self._post(job, text, [], None))
        refs = [sent[k] for k in sorted(sent, key=int)]
        return refs[0] if len(refs) == 1 else f"{refs[0]} (+{len(refs) - 1})"

    async def _post_fitting(
        self, job: Job, content: str, files: Sequence[Upload], view: discord.ui.View | None,
        hidden: frozenset[str], limit: int,
    ) -> tuple[str, list[Upload]]:  # fmt: skip
        """Post ``files``; after each 413 the next ``STEPS`` entry. Returns (ref, linked files)."""
        error: discord.HTTPException | None = None
        budget = limit // max(1, len(files))
        for step, label in enumerate(STEPS):
            pairs = [(u, reencode(u, step, budget)) for u in files]
            attempt = [r for _, r in pairs if r is not None]
            dropped = [u for u, r in pairs if r is None]
            note = f"\n{messages.reencoded_to_fit()}" if 0 < step < len(STEPS) - 1 else ""
            if dropped:  # their links go in this message when they fit, else in one of their own
                links = f"\n{self._links_text(job, dropped)}"
                if len(content + note + links) <= MAX_CONTENT:
                    note, dropped = note + links, []
            upload = [discord.File(io.BytesIO(u.data), filename=u.name, spoiler=u.source in hidden)
                      for u in attempt]  # fmt: skip
            try:
                return await self._post(job, clip(content + note), upload, view), dropped
            except discord.HTTPException as exc:
                if exc.status != 413:
                    raise
                log.warning("job %s: upload too large at step %s; trying smaller", job.id, label)
                error = exc
        assert error is not None
        raise error

    def _links_text(self, job: Job, left: Sequence[Upload]) -> str:
        links = [url for u in left if (url := self._artifact_url(job.id, u.source))]
        if len(links) < len(left):  # no public address configured (web.public_url)
            return messages.too_large_here(len(left))
        return messages.too_large_links(links)

    # --- errors: to their owner only -------------------------------------------------------
    async def report_error(self, job: Job, message: str) -> str:
        prompt = escape(messages.shorten(job.request.prompt, 60))
        text = clip(f"{message} (“{prompt}”)")
        if self.token_alive(job):
            return await self._post(job, text, [], None, ephemeral=True)
        try:  # the token is dead: a DM, never the channel (the prompt is theirs)
            dm = await self._client.create_dm(discord.Object(int(job.request.origin.user)))
            posted = await dm.send(clip(messages.error_in_dm(text)), allowed_mentions=NO_MENTIONS)
        except (discord.HTTPException, ValueError) as exc:
            log.warning("job %s: could not DM its owner about a failure (%s)", job.id, exc)
            return "discord:undeliverable"
        return f"discord:dm:{dm.id}:{posted.id}"

    async def _post(
        self, job: Job, content: str, files: Sequence[discord.File],
        view: discord.ui.View | None, *, ephemeral: bool = False,
    ) -> str:  # fmt: skip
        """A followup while the interaction token lives, then a channel message (bot token)."""
        extra: dict[str, Any] = {"view": view} if view is not None else {}
        if self.token_alive(job):
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

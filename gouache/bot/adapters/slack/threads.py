"""One thread per job: the progress message, then the files and their caption, in one place.

A slash command's job starts its own thread (the progress message is its root); a mention's
job lives in the thread of the mention. What was posted is kept with the job
(``storage.set_delivery_state``: channel, thread, progress message, files uploaded), so a
restarted bot edits the same message and never uploads twice.

When Slack refuses the channel (``not_in_channel``: private channels, DMs, public channels
without ``chat:write.public``; ``channel_not_found``) the job moves to a direct message with
the user, who is told, through the command's ``response_url`` when there is one, how to invite
the bot. A delivery that keeps failing is given up on after ``GIVE_UP_AFTER`` tries, and the
user is told so rather than left waiting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from gouache import messages
from gouache.bot.adapters.slack import replies
from gouache.bot.adapters.slack.blocks import slack_blocks
from gouache.bot.adapters.slack.budget import UpdateBudget
from gouache.request import Origin
from gouache.storage.base import Storage
from gouache.storage.jobs import Job

__all__ = ["Threads", "GIVE_UP_AFTER", "NOT_HERE"]

log = logging.getLogger(__name__)

GIVE_UP_AFTER = 4  # below Delivery's own retry count, so the user hears from us first
NOT_HERE = frozenset({"not_in_channel", "channel_not_found", "is_archived"})
_FINAL = frozenset({"invalid_auth", "account_inactive", "token_revoked", "missing_scope",
                    "no_permission", "restricted_action", "cannot_dm_bot"}) | NOT_HERE  # fmt: skip
State = dict[str, Any]


class Threads:
    """Posting for ``SlackAdapter``: progress edits within budget, results, fallbacks."""

    def __init__(
        self, client: AsyncWebClient, storage: Storage, budget: UpdateBudget,
        progress_seconds: float,
    ) -> None:  # fmt: skip
        self._client = client
        self._storage = storage
        self._budget = budget
        self._every = progress_seconds
        self._edited: dict[str, float] = {}  # job id -> last progress edit (monotonic)

    async def begin(self, job_id: str, channel: str, thread_ts: str) -> None:
        """A job asked for in a message: its replies go into that message's thread (unless
        delivery already started one, which is kept)."""
        if not await self._storage.delivery_state(job_id):
            await self._storage.set_delivery_state(job_id, {"channel": channel, "thread": thread_ts})

    async def progress(self, job: Job, text: str) -> bool:
        """Post or edit the progress message; False when this edit was skipped."""
        state = await self._storage.delivery_state(job.id)
        now = time.monotonic()
        if not state.get("progress"):
            await self._post_root(job, state, text, slack_blocks(text))
            self._edited[job.id] = now
            return True
        if now - self._edited.get(job.id, float("-inf")) < self._every:
            return False
        if not self._budget.try_spend(job.request.origin.guild):
            log.debug("progress edit for job %s skipped: workspace budget spent", job.id)
            return False
        self._edited[job.id] = now
        await self._client.chat_update(channel=state["channel"], ts=state["progress"], text=text,
                                       blocks=slack_blocks(text))  # fmt: skip
        return True

    async def finish(
        self, job: Job, text: str, blocks: list[dict[str, Any]],
        uploads: Sequence[dict[str, Any]] = (), caption: str = "",
    ) -> str:  # fmt: skip
        """Files into the job's thread, then the root says done; returns the delivery ref."""
        self._edited.pop(job.id, None)
        state = await self._storage.delivery_state(job.id)
        try:
            return await self._finish(job, state, text, blocks, uploads, caption)
        except Exception as exc:  # Slack's refusals and the network's failures alike
            error = (str(exc.response.get("error", "")) if isinstance(exc, SlackApiError)
                     else type(exc).__name__)  # fmt: skip
            state["failures"] = int(state.get("failures", 0)) + 1
            await self._storage.set_delivery_state(job.id, state)
            if error not in _FINAL and state["failures"] < GIVE_UP_AFTER:
                raise  # Delivery tries again later
            log.warning("giving up on delivering job %s to Slack (%s)", job.id, error)
            prompt = messages.shorten(job.request.prompt, 60)
            await self.tell(job.request.origin, replies.gave_up(prompt, error or "Slack error"))
            return f"gave-up:slack:{error}"

    async def _finish(
        self, job: Job, state: State, text: str, blocks: list[dict[str, Any]],
        uploads: Sequence[dict[str, Any]], caption: str,
    ) -> str:  # fmt: skip
        fresh = not state.get("progress")
        if fresh:  # nothing posted yet: the root is posted with its final text
            await self._post_root(job, state, text, blocks)
        if uploads and not state.get("uploaded"):
            await self._upload(job, state, uploads, caption)
        if not fresh:
            self._budget.spend(job.request.origin.guild)  # final edits always go out
            await self._client.chat_update(channel=state["channel"], ts=state["progress"],
                                           text=text, blocks=blocks)  # fmt: skip
        return f"slack:{state['channel']}:{state['progress']}"

    async def _post_root(self, job: Job, state: State, text: str, blocks: list[dict[str, Any]]) -> None:
        """The job's first message, in the channel or (refused there) in a DM with the user."""
        state.setdefault("channel", job.request.origin.channel)
        try:
            response = await self._client.chat_postMessage(
                channel=state["channel"], thread_ts=state.get("thread"), text=text, blocks=blocks
            )
        except SlackApiError as exc:
            if str(exc.response.get("error")) not in NOT_HERE or state.get("dm"):
                raise
            await self._move_to_dm(job, state)
            response = await self._client.chat_postMessage(
                channel=state["channel"], text=text, blocks=blocks
            )
        state["channel"] = str(response["channel"])
        state["progress"] = str(response["ts"])
        state["thread"] = state.get("thread") or state["progress"]
        await self._storage.set_delivery_state(job.id, state)

    async def _upload(
        self, job: Job, state: State, uploads: Sequence[dict[str, Any]], caption: str
    ) -> None:
        try:
            await self._client.files_upload_v2(
                channel=state["channel"], thread_ts=state["thread"], file_uploads=list(uploads),
                initial_comment=caption,
            )  # fmt: skip
        except SlackApiError as exc:
            if str(exc.response.get("error")) not in NOT_HERE or state.get("dm"):
                raise
            await self._move_to_dm(job, state)
            response = await self._client.chat_postMessage(
                channel=state["channel"], text=caption, blocks=slack_blocks(caption)
            )
            state["thread"] = state["progress"] = str(response["ts"])
            await self._client.files_upload_v2(
                channel=state["channel"], thread_ts=state["thread"], file_uploads=list(uploads),
                initial_comment=caption,
            )  # fmt: skip
        state["uploaded"] = True
        await self._storage.set_delivery_state(job.id, state)

    async def _move_to_dm(self, job: Job, state: State) -> None:
        """Slack refused the channel: tell the user how to invite the bot, carry on in a DM."""
        origin = job.request.origin
        log.info("job %s: not allowed to post in %s, delivering by DM", job.id, origin.channel)
        opened = await self._client.conversations_open(users=origin.user)
        await self.tell(origin, replies.sent_by_dm(origin.channel), channel_ok=False)
        state.update(channel=str(opened["channel"]["id"]), thread=None, dm=True, progress=None)

    async def tell(self, origin: Origin, text: str, *, channel_ok: bool = True) -> None:
        """A private note to the user, by whatever way is left; never raises."""
        ways: list[Callable[[], Awaitable[Any]]] = []
        if origin.reply_token:
            ways.append(lambda: AsyncWebhookClient(origin.reply_token).send(
                text=text, response_type="ephemeral", replace_original=False))  # fmt: skip
        if channel_ok:
            ways.append(lambda: self._client.chat_postEphemeral(
                channel=origin.channel, user=origin.user, text=text))  # fmt: skip
        ways.append(lambda: self._dm(origin.user, text))
        for way in ways:
            try:
                response = await way()
                if getattr(response, "status_code", 200) < 400:
                    return
            except Exception as exc:  # the next way may still work
                log.info("could not tell user %s that way: %s", origin.user, type(exc).__name__)
        log.warning("could not tell user %s anything", origin.user)

    async def _dm(self, user: str, text: str) -> Any:
        opened = await self._client.conversations_open(users=user)
        return await self._client.chat_postMessage(channel=opened["channel"]["id"], text=text)

"""The web playground's adapter: HTTP requests in, ``Request`` out; jobs back out as JSON.

Like the chat adapters it only translates: a command line (and an optional upload) becomes a
``Request`` through ``commands``, admission decides, storage holds the state. The page asks
for its results (JSON or SSE) instead of being posted to, so ``deliver`` only wakes streams.
The listings (``request.LISTINGS``: ``/help``, ``/loras``) are ``GET /api/NAME?model=...``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from gouache import messages
from gouache.bot import commands
from gouache.bot.actions import ButtonActions
from gouache.bot.adapter import (
    Acknowledgement,
    Action,
    AdapterDeps,
    Progress,
    Result,
    buttons_for,
    parse_press,
)
from gouache.bot.adapters.web_streams import StreamHub
from gouache.bot.admission import WEB_GROUP
from gouache.bot.captions import artifact_label
from gouache.bot.links import FILES_PREFIX, ArtifactLinks
from gouache.bot.listings import data as listing_data
from gouache.bot.moderation import Screened, screen
from gouache.bot.uploads import attach, check_size
from gouache.errors import (
    InvalidRequest,
    NotAllowed,
    NotFound,
    QueueFull,
    RateLimited,
    TooLarge,
    UserError,
)
from gouache.request import LISTINGS, Listing, Origin, Request
from gouache.storage.jobs import Artifact, ArtifactKind, Job, JobStatus

if TYPE_CHECKING:
    pass

__all__ = ["WebAdapter", "USER_KEY", "error_middleware", "is_named_user"]

log = logging.getLogger(__name__)

USER_KEY = web.RequestKey("gouache.web_user", str)  # set by gouache.web.app's identity middleware
_STATUS_FOR = {
    InvalidRequest: 400,
    TooLarge: 413,
    NotAllowed: 403,
    NotFound: 404,
    RateLimited: 429,
    QueueFull: 429,
}
_SSE_POLL = 0.4
_SSE_PING = 15.0
_KEY_LIMIT = 100  # Idempotency-Key characters
_FORM_SLACK = 64 * 1024  # multipart headers and boundaries around the command and the file
# What a malformed, truncated or oddly encoded body makes aiohttp or the codecs raise.
_UTF8 = ("utf-8", "utf8")
_BODY_ERRORS = (ValueError, LookupError, AssertionError, KeyError, HttpProcessingError)


def is_named_user(user: str) -> bool:
    """A ``[web.users]`` person (``gouache.web.identity``): limits of their own, no group."""
    return user.startswith("web:user:")


def status_for(exc: UserError) -> int:
    for cls in type(exc).__mro__:
        if cls in _STATUS_FOR:
            return _STATUS_FOR[cls]
    return 400


@web.middleware
async def error_middleware(request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
    """The web's one error funnel: user errors and HTTP errors become ``{"error": message}``,
    a client that hung up is a DEBUG line, bugs a 500."""
    try:
        return await handler(request)
    except UserError as exc:
        headers = {}
        if isinstance(exc, RateLimited):
            headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        return web.json_response({"error": exc.message}, status=status_for(exc), headers=headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        return web.json_response({"error": exc.reason}, status=exc.status, headers=headers)
    except ConnectionResetError:
        log.debug("web client went away during %s %s", request.method, request.path)
        return web.Response(status=499)  # nobody reads it
    except Exception:
        ref = uuid.uuid4().hex
        log.exception("web request %s %s failed (ref %s)", request.method, request.path, ref[:8])
        return web.json_response({"error": messages.internal_error(ref)}, status=500)


class WebAdapter:
    """Playground and JSON API handlers; one instance per process, wired in ``service``."""

    platform = "web"
    can_hide_images = True  # the playground blurs flagged images until clicked

    def __init__(self, deps: AdapterDeps, links: ArtifactLinks) -> None:
        self._storage = deps.storage
        self._actions = ButtonActions(deps.storage, deps.settings.limits)
        self._admission = deps.admission
        self._settings = deps.settings
        self._on_admitted = deps.on_admitted
        self._prompt_overflow = deps.prompt_overflow
        self._links = links
        self._web = deps.settings.web
        self._streams = StreamHub(self._stream_view, max_total=self._web.max_streams,
                                  max_per_user=self._web.max_streams_per_user,
                                  poll_seconds=_SSE_POLL)  # fmt: skip

    # --- Adapter protocol: the page pulls its results, so these only wake streams ----------
    async def acknowledge(self, ack: Acknowledgement) -> None:
        return None

    async def show_progress(self, progress: Progress) -> None:
        return None

    async def deliver(self, result: Result) -> str:
        self._pulse()
        return f"web:{result.job.id}"

    async def report_error(self, job: Job, message: str) -> str:
        self._pulse()
        return f"web:{job.id}"

    def _pulse(self) -> None:
        self._streams.nudge()

    # --- routes ----------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/api/jobs", self.create_job),
            web.get("/api/jobs", self.list_jobs),
            web.get("/api/jobs/{id}", self.get_job),
            web.post("/api/jobs/{id}/cancel", self.cancel_job),
            web.post("/api/jobs/{id}/actions/{action}", self.act),
            web.post("/api/jobs/{id}/remix/{index}", self.remix),
            web.get("/api/jobs/{id}/events", self.events),
            web.get("/api/jobs/{id}/artifacts/{name}", self.artifact),
            web.get(FILES_PREFIX + "{id}/{name}", self.linked_artifact),
            *(web.get(f"/api/{listing.value}", self._lister(listing)) for listing in LISTINGS),
        ]

    def _lister(self, listing: Listing) -> Callable[[web.Request], Any]:
        async def show(request: web.Request) -> web.Response:
            """``GET /api/help``, ``GET /api/loras``: ``?model=NAME`` or the default model."""
            settings = self._settings
            model = commands.resolve_model(request.query.get("model") or settings.default_model, settings)
            return web.json_response(listing_data(listing, settings, model))

        return show

    def _origin(self, request: web.Request, endpoint: str, body: bytes) -> Origin:
        """The request's origin. An ``Idempotency-Key`` is bound to the user, the endpoint and
        the body: the same key again returns the first job, with another body it is a 422
        (``_admit``); the body's fingerprint rides in ``channel``, which web jobs don't use."""
        given = request.headers.get("Idempotency-Key")
        if given is not None and not (
            0 < len(given) <= _KEY_LIMIT and given.isascii() and given.isprintable()
        ):
            raise InvalidRequest(messages.web_idempotency_key(_KEY_LIMIT))
        user = request[USER_KEY]
        fingerprint = hashlib.sha256(endpoint.encode() + b"\0" + body).hexdigest()[:24]
        key = f"{endpoint}:{given}" if given else uuid.uuid4().hex
        return Origin(
            platform="web", request_id=f"{user}:{key}", user=user,
            channel=f"playground:{fingerprint}",
            guild="" if is_named_user(user) else WEB_GROUP,
        )  # fmt: skip

    async def create_job(self, request: web.Request) -> web.Response:
        text, upload = await self._read_command(request)
        if len(text.encode("utf-8", "surrogatepass")) > self._web.max_command_bytes:
            raise TooLarge(messages.web_command_too_long(self._web.max_command_bytes))
        body = text.encode("utf-8", "surrogatepass") + b"\0" + hashlib.sha256(upload or b"").digest()
        origin = self._origin(request, "create", body)
        built = commands.build_request(
            commands.parse_text(text), origin, self._settings, prompt_overflow=self._prompt_overflow
        )
        built, inputs = attach(built, upload, self._settings.limits)
        return await self._admit(built, inputs)

    async def _admit(self, built: Request, inputs: list[Artifact]) -> web.Response:
        admitted = await (
            self._admission.admit(built, inputs=inputs) if inputs else self._admission.admit(built)
        )
        self._on_admitted()
        job = admitted.job
        if not admitted.created and job.request.origin.channel != built.origin.channel:
            return web.json_response({"error": messages.web_idempotency_mismatch()}, status=422)
        return web.json_response(
            {
                "id": job.id,
                "created": admitted.created,
                "position": admitted.position,
                "eta_seconds": admitted.eta_seconds,
                "generator_running": admitted.generator_running,
                "message": admitted.message,
                "command": commands.format_command(job.request),
                "notes": list(job.request.notes),
                "url": f"/api/jobs/{job.id}",
            },
            status=202 if admitted.created else 200,
        )

    async def _read_body(self, request: web.Request, limit: int) -> bytes:
        """At most ``limit`` bytes, refused by Content-Length before any is read, and read
        within ``web.read_timeout_seconds``."""
        if request.content_length is not None and request.content_length > limit:
            raise TooLarge(messages.web_body_too_large(limit))
        data = bytearray()
        try:
            async with asyncio.timeout(self._web.read_timeout_seconds):
                while chunk := await request.content.read(64 * 1024):
                    data += chunk
                    if len(data) > limit:
                        raise TooLarge(messages.web_body_too_large(limit))
        except TimeoutError as exc:
            raise InvalidRequest(messages.web_body_timeout()) from exc
        except HttpProcessingError as exc:  # a truncated or malformed chunked body
            raise InvalidRequest(messages.web_body_malformed("HTTP")) from exc
        return bytes(data)

    async def _read_command(self, request: web.Request) -> tuple[str, bytes | None]:
        if request.content_type == "application/json":
            if (request.charset or "utf-8").lower() not in _UTF8:  # JSON is UTF-8 (RFC 8259)
                raise InvalidRequest(messages.web_body_malformed("UTF-8 JSON"))
            raw = await self._read_body(request, self._web.max_json_bytes)
            try:
                body = json.loads(raw.decode("utf-8"))
            except (ValueError, RecursionError) as exc:
                raise InvalidRequest(messages.web_body_malformed("UTF-8 JSON")) from exc
            text = body.get("command") if isinstance(body, dict) else None
            if not isinstance(text, str):
                raise InvalidRequest(messages.JSON_NEEDS_COMMAND)
            return text, None
        if request.content_type.startswith("multipart/"):
            try:
                async with asyncio.timeout(self._web.read_timeout_seconds):
                    return await self._read_multipart(request)
            except TimeoutError as exc:
                raise InvalidRequest(messages.web_body_timeout()) from exc
            except _BODY_ERRORS as exc:
                raise InvalidRequest(messages.web_body_malformed("multipart/form-data")) from exc
        raise InvalidRequest(messages.UNSUPPORTED_BODY)

    async def _read_multipart(self, request: web.Request) -> tuple[str, bytes | None]:
        """Two known parts at most (``command``, ``file``), each within its own limit."""
        limits, command_limit = self._settings.limits, self._web.max_command_bytes
        total = limits.max_upload_bytes + command_limit + _FORM_SLACK
        if request.content_length is not None and request.content_length > total:
            raise TooLarge(messages.web_body_too_large(total))
        text, upload, seen = None, None, set()
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader):  # nested multipart: not ours
                raise InvalidRequest(messages.NESTED_MULTIPART)
            if part.name not in ("command", "file") or part.name in seen:
                raise InvalidRequest(messages.web_form_fields())
            seen.add(part.name)
            encoding = part.headers.get("Content-Transfer-Encoding", "binary").lower()
            if encoding not in ("binary", "7bit", "8bit"):
                raise InvalidRequest(messages.web_body_malformed("multipart/form-data"))
            data = bytearray()
            cap = command_limit if part.name == "command" else limits.max_upload_bytes
            while chunk := await part.read_chunk(64 * 1024):
                data += chunk
                if part.name == "file":
                    check_size(len(data), limits)  # stop reading at the cap
                elif len(data) > cap:
                    raise TooLarge(messages.web_command_too_long(cap))
            if part.name == "command":
                try:
                    text = bytes(data).decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InvalidRequest(messages.web_body_malformed("UTF-8 text")) from exc
            else:
                upload = bytes(data) or None
        if text is None:
            raise InvalidRequest(messages.FORM_NEEDS_COMMAND)
        return text, upload

    async def _job(self, request: web.Request) -> Job:
        job_id = request.match_info["id"]
        if len(job_id) > 64:
            raise NotFound(messages.NO_SUCH_JOB)
        return await self._storage.get_job(job_id)

    async def get_job(self, request: web.Request) -> web.Response:
        return web.json_response(await self._view(await self._job(request)))

    async def list_jobs(self, request: web.Request) -> web.Response:
        jobs = await self._storage.list_jobs(user=request[USER_KEY], limit=20)
        return web.json_response({"jobs": [await self._view(j, artifacts=False) for j in jobs]})

    async def cancel_job(self, request: web.Request) -> web.Response:
        job = await self._actions.cancel(request.match_info["id"], request[USER_KEY])
        return web.json_response(await self._view(job))

    async def act(self, request: web.Request) -> web.Response:
        try:
            action, index = parse_press(request.match_info["action"])
        except ValueError as exc:
            raise NotFound(messages.unknown_action(a.value for a in Action)) from exc
        job = await self._job(request)
        if job.request.origin.user != request[USER_KEY]:  # nor reuse of someone else's upload
            raise NotAllowed(messages.web_not_yours())
        origin = self._origin(request, f"{job.id}/{request.match_info['action']}", b"")
        built, inputs = await self._actions.follow_up(job.id, action, origin, index)
        return await self._admit(built, inputs)

    async def remix(self, request: web.Request) -> web.Response:
        """Image ``index`` of one of the caller's results as the start of a new command (a
        prompt: a remix; ``upscale``, ``edit ...``), as a chat reply to a result does: the same
        ``ButtonActions.remix_reply``, no upload. Only the result's owner may (403)."""
        index = request.match_info["index"]
        if not (index.isascii() and index.isdigit() and len(index) <= 3):
            raise NotFound(messages.NO_SUCH_IMAGE)
        job = await self._job(request)
        if job.request.origin.user != request[USER_KEY]:
            raise NotAllowed(messages.web_not_yours())
        if request.content_type != "application/json":
            raise InvalidRequest(messages.UNSUPPORTED_BODY)
        text, _ = await self._read_command(request)
        if len(text.encode("utf-8", "surrogatepass")) > self._web.max_command_bytes:
            raise TooLarge(messages.web_command_too_long(self._web.max_command_bytes))
        origin = self._origin(request, f"{job.id}/remix.{index}", text.encode("utf-8", "surrogatepass"))
        built = commands.build_request(commands.parse_message(text), origin, self._settings,
                                       prompt_overflow=self._prompt_overflow)  # fmt: skip
        built, inputs = await self._actions.remix_reply(job.id, built, int(index))
        return await self._admit(built, inputs)

    async def linked_artifact(self, request: web.Request) -> web.Response:
        """A signed link posted to a chat platform instead of a file it refused (413)."""
        job_id, name = request.match_info["id"], request.match_info["name"]
        query = request.query
        if not self._links.verify(job_id, name, query.get("sig", ""), query.get("exp", "")):
            raise NotFound(messages.BAD_FILE_LINK)
        # A link has no blur to hide behind, so flagged images are withheld here.
        return await self._serve(await self._job(request), name, can_hide=False)

    async def artifact(self, request: web.Request) -> web.Response:
        return await self._serve(await self._job(request), request.match_info["name"])

    async def _serve(self, job: Job, name: str, *, can_hide: bool = True) -> web.Response:
        for artifact in (await self._visible(job, can_hide=can_hide)).artifacts:
            if artifact.name == name:
                return web.Response(
                    body=artifact.data,
                    content_type=artifact.mime,
                    headers={
                        "Cache-Control": "private, max-age=86400, immutable",
                        "X-Content-Type-Options": "nosniff",
                        "Content-Disposition": f'inline; filename="{artifact.name}"',
                    },
                )
        raise NotFound(messages.NO_SUCH_ARTIFACT)

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: ``status`` while queued or running, one ``done``, then close.

        Streams are capped per user and in total (429 past them: the page polls instead);
        every stream of one job shares one poller (``web_streams``)."""
        job = await self._job(request)
        async with self._streams.open(request[USER_KEY], job.id) as watch:
            response = web.StreamResponse(
                headers={
                    "Content-Type": "text/event-stream",
                    "Cache-Control": "no-cache",
                    "X-Accel-Buffering": "no",
                }
            )
            await response.prepare(request)
            seen = 0
            # A closed browser tab or a database outage ends the stream; the page falls back
            # to polling.
            with contextlib.suppress(ConnectionResetError):
                while not watch.failed:
                    if watch.version != seen and watch.view is not None:
                        seen = watch.version
                        event = "done" if watch.terminal else "status"
                        await response.write(
                            f"event: {event}\ndata: {json.dumps(watch.view)}\n\n".encode()
                        )
                        if watch.terminal:
                            break
                    elif not await watch.changed(_SSE_PING):
                        await response.write(b": ping\n\n")
            return response

    async def _stream_view(self, job_id: str) -> tuple[dict[str, Any], bool]:
        job = await self._storage.get_job(job_id)
        return await self._view(job), job.is_terminal

    # --- translation: job -> JSON ------------------------------------------------------------
    async def _visible(self, job: Job, *, can_hide: bool = True) -> Screened:
        if job.status is not JobStatus.SUCCEEDED:
            return Screened(())
        found = [a for a in await self._storage.artifacts(job.id) if a.kind is not ArtifactKind.INPUT]
        action = self._settings.moderation.flagged_action
        return screen(found, action, can_hide=can_hide and self.can_hide_images)

    async def _view(self, job: Job, *, artifacts: bool = True) -> dict[str, Any]:
        position = None
        if job.status is JobStatus.QUEUED:
            place = await self._storage.queue_position(job.id)
            position = place[0] if place else None
        view: dict[str, Any] = {
            "id": job.id,
            "status": job.status.value,
            "progress": round(job.progress, 3),
            "position": position,
            "error": job.error,
            "command": commands.format_command(job.request),
            "kind": job.request.kind.value,
            "count": job.request.count,
            "created_at": job.created_at.isoformat(),
            "finished_at": job.finished_at.isoformat() if job.finished_at else None,
            "notes": list(job.request.notes),
        }
        if artifacts:
            visible = await self._visible(job)
            view["artifacts"] = [
                {
                    "name": a.name,
                    "kind": a.kind.value,
                    "mime": a.mime,
                    "size": a.size,
                    "url": f"/api/jobs/{job.id}/artifacts/{a.name}",
                    "hidden": a.name in visible.hidden,
                    "label": artifact_label(job.request, a),
                    # a sweep's grid and the strips carry text: shown at their own size
                    "wide": a.index is None and a.kind is ArtifactKind.IMAGE,
                }
                for a in sorted(visible.artifacts, key=_display_order)
            ]
            view["withheld"] = visible.withheld
            view["actions"] = (
                [b.token for b in buttons_for(job)]
                if job.status is JobStatus.SUCCEEDED
                else []
            )
        return view


_KIND_ORDER = {ArtifactKind.IMAGE: 0, ArtifactKind.GIF: 1, ArtifactKind.DEPTH: 2, ArtifactKind.REPORT: 3}


def _display_order(artifact: Artifact) -> tuple[int, int, int]:
    """An experiment's own files first (no image index: a sweep's grid; an interpolation's or
    --process's GIF, then its strip); then by kind (images, GIFs, depth maps, report) and image
    index (cell 10 after cell 9)."""
    if artifact.index is None and artifact.kind in (ArtifactKind.IMAGE, ArtifactKind.GIF):
        return 0, 0 if artifact.kind is ArtifactKind.GIF else 1, 0
    return 1, _KIND_ORDER.get(artifact.kind, 9), artifact.index if artifact.index is not None else -1

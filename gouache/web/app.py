"""The one aiohttp application: playground page, JSON API, /healthz, /metrics.

Dependencies arrive in one ``AppDeps`` stored under an ``AppKey``; nothing here opens
storage or reads the environment. The middlewares are the web edge's whole policy, in order:
the Host rule (without a token only loopback names and the public host: no DNS rebinding),
same-origin writes, the token (when one is configured; wrong tokens throttled per client
address), a signed user id per browser (``identity``), and the adapter's error funnel.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol

from aiohttp import web

from gouache import messages
from gouache.bot.adapters.web import USER_KEY, WebAdapter, error_middleware
from gouache.bot.links import FILES_PREFIX
from gouache.config import Settings
from gouache.web.edge import AddressBuckets, ClientAddress, allowed_host, allowed_origin
from gouache.web.identity import Identities, Named, cookie_name

__all__ = ["AppDeps", "DEPS", "make_app", "runner_options", "USER_COOKIE", "TOKEN_COOKIE"]

USER_COOKIE = "gouache_user"
TOKEN_COOKIE = "gouache_session"
_OPEN_PATHS = frozenset({"/healthz", "/slack/events"})  # Slack signs its own (adapter checks)
_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'"
)
_YEAR = 365 * 86400

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Health(Protocol):
    async def check(self, worker_required: bool = True) -> tuple[bool, dict[str, Any]]: ...


class _MetricsSource(Protocol):
    async def render(self) -> bytes: ...


@dataclass(frozen=True)
class AppDeps:
    settings: Settings
    web_adapter: WebAdapter
    health: _Health
    metrics: _MetricsSource
    # Chat platforms' callbacks (Slack's events endpoint): they check the platform's own
    # signature, and the platform cannot send our web token, so the token check skips them.
    extra_routes: Sequence[web.RouteDef] = field(default=())
    accepting: Callable[[], bool] = lambda: True  # False once shutdown has begun
    # Signs user cookies and token sessions; kept in the data directory by ``service`` so
    # they survive restarts (a random per-process key otherwise).
    signing_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))


@dataclass
class _Edge:
    """The edge's per-process state: keys, the client-address rule, per-address buckets."""

    identities: Identities
    client: ClientAddress
    new_users: AddressBuckets
    wrong_tokens: AddressBuckets
    user_cookie: str
    session_cookie: str


DEPS = web.AppKey("gouache.deps", AppDeps)
EDGE = web.AppKey("gouache.edge", _Edge)
SIGNED_PATHS = web.AppKey("gouache.signed_paths", frozenset)
NAMED_KEY = web.RequestKey("gouache.web_named", Named)


def runner_options(settings: Settings) -> dict[str, Any]:
    """``web.AppRunner`` options: an idle or slow-header connection is closed after
    ``web.read_timeout_seconds`` (aiohttp's keep-alive timer also runs from connect)."""
    return {"keepalive_timeout": settings.web.read_timeout_seconds}


def make_app(deps: AppDeps) -> web.Application:
    settings = deps.settings
    w = settings.web
    app = web.Application(
        middlewares=[_edge_middleware, _identity_middleware, error_middleware],
        client_max_size=settings.limits.max_upload_bytes + 256 * 1024,
    )
    app[DEPS] = deps
    master = w.token.get_secret_value() if w.token is not None else None
    users = {name: token.get_secret_value() for name, token in w.users.items()}
    app[EDGE] = _Edge(
        identities=Identities(deps.signing_key, master, users),
        client=ClientAddress(w.trusted_proxies),
        new_users=AddressBuckets(w.new_users_per_hour / 3600.0, w.new_users_burst),
        wrong_tokens=AddressBuckets(w.failed_token_attempts_per_minute / 60.0,
                                    max(1, round(w.failed_token_attempts_per_minute))),
        user_cookie=cookie_name(USER_COOKIE, w.https),
        session_cookie=cookie_name(TOKEN_COOKIE, w.https),
    )  # fmt: skip
    app[SIGNED_PATHS] = frozenset(route.path for route in deps.extra_routes if isinstance(route, web.RouteDef))
    static = resources.files("gouache.web").joinpath("static")
    app.add_routes(
        [
            web.get("/", _index),
            web.get("/healthz", _healthz),
            web.get("/metrics", _metrics),
            web.static("/static", str(static), append_version=True),
            *deps.web_adapter.routes(),
            *deps.extra_routes,
        ]
    )
    return app


def _refuse(message: str, status: int, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


@web.middleware
async def _edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Host rule, same-origin writes, then the token (when any is configured)."""
    deps, edge = request.app[DEPS], request.app[EDGE]
    public_url = deps.settings.web.public_url
    tokens = edge.identities.has_tokens
    if not tokens and not allowed_host(request.host, public_url):
        return _refuse(messages.web_wrong_host(), 421)
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        origin = request.headers.get("Origin")
        if origin is not None and not allowed_origin(origin, request.host, public_url):
            return _refuse(messages.web_cross_origin(), 403)
        if request.path.startswith("/api/") and not deps.accepting():
            return _refuse(messages.web_restarting(), 503)
    # Signed artifact links (``bot/links.py``) and chat callbacks check their own signatures.
    if (not tokens or request.path in _OPEN_PATHS or request.path.startswith(FILES_PREFIX)
            or request.path in request.app[SIGNED_PATHS]):
        return await handler(request)
    return await _with_token(request, handler, edge, deps.settings.web.https)


async def _with_token(
    request: web.Request, handler: Handler, edge: _Edge, https: bool
) -> web.StreamResponse:
    address = edge.client(request)
    query_token = request.query.get("token", "") if request.path == "/" else ""
    auth = request.headers.get("Authorization", "")
    bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    session = request.cookies.get(edge.session_cookie, "")
    if (query_token or bearer or session) and not edge.wrong_tokens.available(address):
        wait = edge.wrong_tokens.retry_after(address)
        return _refuse(messages.web_token_throttled(), 429, **{"Retry-After": str(max(1, round(wait)))})
    named = None
    if query_token:
        named = edge.identities.token(query_token)
        if named is not None:
            # One visit with ?token=... leaves a session value derived from the token (never
            # the token) in a cookie, and strips the token from the address bar.
            response = web.HTTPFound("/")
            response.set_cookie(edge.session_cookie, edge.identities.session_for(named),
                                httponly=True, samesite="Strict", secure=https, path="/")  # fmt: skip
            raise response
    elif bearer:
        named = edge.identities.token(bearer)
    elif session:
        named = edge.identities.session(session)
    if named is None:
        if query_token or bearer or session:
            edge.wrong_tokens.take(address)
        return _refuse(messages.web_token_required(), 401)
    request[NAMED_KEY] = named
    return await handler(request)


@web.middleware
async def _identity_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A signed id per browser (or per named token), so per-user limits apply per browser.

    An unrecognised client gets a fresh id only on a GET and within its address's budget;
    otherwise the id its address shares, so minting identities is not free."""
    edge = request.app[EDGE]
    named = request.get(NAMED_KEY)
    issue = None
    if named is not None and named.name is not None:
        user = edge.identities.named_user(named.name)
    else:
        cookie = request.cookies.get(edge.user_cookie, "")
        found = edge.identities.user_from_cookie(cookie) if cookie else None
        if found is None:
            address = edge.client(request)
            fresh = request.method == "GET" and edge.new_users.take(address)
            found = edge.identities.new_user() if fresh else edge.identities.address_user(address)
            issue = edge.identities.cookie(found)
        user = found
    request[USER_KEY] = user
    response = await handler(request)
    if issue is not None and not response.prepared:
        response.set_cookie(edge.user_cookie, issue, max_age=_YEAR, httponly=True,
                            samesite="Strict", secure=request.app[DEPS].settings.web.https,
                            path="/")  # fmt: skip
    response.headers.setdefault("Content-Security-Policy", _CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


async def _index(request: web.Request) -> web.StreamResponse:
    page = resources.files("gouache.web").joinpath("static", "index.html").read_bytes()
    return web.Response(body=page, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-cache"})  # fmt: skip


async def _healthz(request: web.Request) -> web.Response:
    # ?worker=optional: the bot itself is fine without a worker (Kubernetes probes, where
    # KEDA scales the workers to zero); the details still say what the workers are doing.
    optional = request.query.get("worker") == "optional"
    healthy, details = await request.app[DEPS].health.check(worker_required=not optional)
    return web.json_response(details, status=200 if healthy else 503)


async def _metrics(request: web.Request) -> web.Response:
    body = await request.app[DEPS].metrics.render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

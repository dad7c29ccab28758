"""The one aiohttp application: playground page, JSON API, /healthz, /metrics.

Dependencies arrive in one ``AppDeps`` stored under an ``AppKey``; nothing here opens
storage or reads the environment. The middlewares are the web edge's whole policy: a token
when one is configured (required off loopback, checked by ``service``), a cookie-held random
user id per browser, same-origin writes, and the adapter's error funnel.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol

from aiohttp import web

from gouache.bot.adapters.web import USER_KEY, WebAdapter, error_middleware, new_user_id
from gouache.bot.links import FILES_PREFIX
from gouache.config import Settings

__all__ = ["AppDeps", "DEPS", "make_app", "USER_COOKIE", "TOKEN_COOKIE"]

USER_COOKIE = "gouache_user"
TOKEN_COOKIE = "gouache_token"
_USER_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
_OPEN_PATHS = frozenset({"/healthz", "/slack/events"})  # Slack signs its own (adapter checks)
_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'"
)

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


DEPS = web.AppKey("gouache.deps", AppDeps)
SIGNED_PATHS = web.AppKey("gouache.signed_paths", frozenset)


def make_app(deps: AppDeps) -> web.Application:
    settings = deps.settings
    app = web.Application(
        middlewares=[_auth_middleware, _identity_middleware, error_middleware],
        client_max_size=settings.limits.max_upload_bytes + 256 * 1024,
    )
    app[DEPS] = deps
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


def _token(deps: AppDeps) -> str | None:
    token = deps.settings.web.token
    return token.get_secret_value() if token is not None else None


@web.middleware
async def _auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Token check (when configured) and a same-origin rule for writes."""
    deps = request.app[DEPS]
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        origin = request.headers.get("Origin")
        if origin and origin.split("://", 1)[-1] != request.host:
            return web.json_response({"error": "Cross-origin requests are refused."}, status=403)
        if request.path.startswith("/api/") and not deps.accepting():
            return web.json_response(
                {"error": "gouache is restarting; try again in a minute."}, status=503
            )
    expected = _token(deps)
    # Signed artifact links (``bot/links.py``) and chat callbacks check their own signatures.
    if (expected is None or request.path in _OPEN_PATHS or request.path.startswith(FILES_PREFIX)
            or request.path in request.app[SIGNED_PATHS]):
        return await handler(request)
    query_token = request.query.get("token", "")
    if request.path == "/" and query_token and secrets.compare_digest(query_token, expected):
        # One visit with ?token=... sets a cookie and strips the token from the address bar.
        response = web.HTTPFound("/")
        response.set_cookie(TOKEN_COOKIE, expected, httponly=True, samesite="Strict")
        raise response
    given = request.cookies.get(TOKEN_COOKIE, "")
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    if not (given and secrets.compare_digest(given, expected)):
        return web.json_response(
            {"error": "A token is required: send Authorization: Bearer <token> or open /?token=<token>."},
            status=401,
        )
    return await handler(request)


@web.middleware
async def _identity_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A random id per browser, kept in a cookie, so per-user limits apply per browser."""
    user = request.cookies.get(USER_COOKIE, "")
    fresh = not (user.startswith("web-") and 8 <= len(user) <= 40 and set(user) <= _USER_CHARS)
    if fresh:
        user = new_user_id()
    request[USER_KEY] = user
    response = await handler(request)
    if fresh and not response.prepared:
        response.set_cookie(
            USER_COOKIE, user, max_age=365 * 86400, httponly=True, samesite="Strict"
        )
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

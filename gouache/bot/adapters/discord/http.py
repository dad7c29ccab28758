"""Discord HTTP plumbing: ``api_base`` (a local fake in tests) and token redaction in logs."""

from __future__ import annotations

import logging
import re
from typing import Any

import discord
import yarl
from discord.http import Route
from discord.webhook.async_ import AsyncWebhookAdapter

__all__ = ["RedactTokens", "RoutedWebhooks", "redirect", "install_redaction"]

_TOKEN_IN_URL = re.compile(r"(/(?:webhooks|interactions)/\d+/)[^/?\s'\"]+")
_TOKEN_IN_EVENT = re.compile(r"""(['"]token['"]:\s*['"])[^'"]+""")  # gateway DEBUG dumps
_LOGGERS = ("discord.http", "discord.webhook.async_", "discord.gateway", "discord.client")


class RedactTokens(logging.Filter):
    """discord.py logs webhook URLs and raw events: an interaction token is a credential."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = record.getMessage()
            record.args = ()
        text = _TOKEN_IN_URL.sub(r"\1<token>", str(record.msg))
        record.msg = _TOKEN_IN_EVENT.sub(r"\1<token>", text)
        return True


def install_redaction() -> None:
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())


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

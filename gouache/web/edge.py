"""Who is asking, from where, and may they: the client address, the Host and Origin rules,
and small per-address token buckets (identities issued, wrong tokens tried).

The buckets live in process memory: they guard one process's door against a burst, and losing
them at a restart costs nothing (the queue's own limits live in the database).
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from aiohttp import web

__all__ = ["AddressBuckets", "ClientAddress", "allowed_host", "allowed_origin", "public_origin"]

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})


class ClientAddress:
    """The real client address: the socket's peer, or, when that peer is a trusted reverse
    proxy, the nearest ``X-Forwarded-For`` hop that is not one of ours."""

    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        self._trusted = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        return any(ip in net for net in self._trusted)

    def __call__(self, request: web.BaseRequest) -> str:
        peer = request.remote or ""
        if not self._trusted or not self._is_trusted(peer):
            return peer
        hops = [h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")]
        for hop in reversed([h for h in hops if h]):
            if not self._is_trusted(hop):
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return peer  # a garbled header names nobody: the proxy is the client
        return peer


def public_origin(public_url: str | None) -> str | None:
    """``scheme://host[:port]`` of ``web.public_url``, lower-cased, or None."""
    if not public_url:
        return None
    parts = urlsplit(public_url)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else None


def _host_name(host: str) -> str:
    """``host[:port]`` without the port; IPv6 keeps its brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def allowed_host(host: str, public_url: str | None) -> bool:
    """Without a token only loopback names and the public host are served: a DNS-rebinding
    page (``Host: attacker.example`` resolving to 127.0.0.1) gets a 421."""
    name = _host_name(host)
    if name in LOOPBACK_HOSTS:
        return True
    public = urlsplit(public_url).hostname if public_url else None
    return bool(public) and name.strip("[]") == public


def allowed_origin(origin: str, host: str, public_url: str | None) -> bool:
    """A write's ``Origin`` is this server as the browser saw it: the request's own Host, or
    the configured public origin (a proxy that rewrites Host still works)."""
    origin = origin.strip().lower()
    if origin == public_origin(public_url):
        return True
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc == host.strip().lower()


class AddressBuckets:
    """Token buckets per client address, the least recently used dropped past ``max_keys``."""

    def __init__(
        self, rate_per_second: float, burst: int, *, max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self._rate, self._burst, self._max = rate_per_second, float(burst), max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _tokens(self, key: str) -> float:
        tokens, then = self._buckets.get(key, (self._burst, self._clock()))
        return min(self._burst, tokens + (self._clock() - then) * self._rate)

    def available(self, key: str) -> bool:
        return self._tokens(key) >= 1.0

    def retry_after(self, key: str) -> float:
        return max(0.0, (1.0 - self._tokens(key)) / self._rate)

    def take(self, key: str) -> bool:
        """Take one token; False (nothing taken) when the address has none left."""
        tokens = self._tokens(key)
        if tokens < 1.0:
            return False
        self._buckets[key] = (tokens - 1.0, self._clock())
        self._buckets.move_to_end(key)
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        return True

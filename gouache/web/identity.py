"""Web identities and sessions a client cannot mint or forge.

A browser's user id travels in a cookie signed with a server key (HMAC), so a client cannot
claim another user's id; fresh ids are issued at a bounded rate per client address (``edge``),
and past it a client gets its address's own id, so a flood of cookie-less requests is one
user. A token opened with ``/?token=`` leaves a session value derived from it (an HMAC), never
the token itself, in the cookie; named people (``[web.users]``) are told apart by which token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from gouache.bot.links import same_text

__all__ = ["Identities", "Named", "cookie_name"]

_ID_PREFIX = "web:"
_NAMED_PREFIX = "web:user:"


def cookie_name(base: str, https: bool) -> str:
    """``__Host-`` cookies are Secure, host-only and path ``/``: browsers enforce all three."""
    return f"__Host-{base}" if https else base


def _mac(key: bytes, purpose: str, value: str) -> str:
    digest = hmac.new(key, f"{purpose}\0{value}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")[:22]


@dataclass(frozen=True)
class Named:
    """Who a token names: ``None`` for the master token, else a ``[web.users]`` name."""

    name: str | None


class Identities:
    """Signs and checks user cookies and token sessions under one server key."""

    def __init__(self, key: bytes, master: str | None, users: dict[str, str]) -> None:
        self._key = hmac.new(key, b"gouache web identity", hashlib.sha256).digest()
        self._tokens: list[tuple[str, Named]] = [(master, Named(None))] if master else []
        self._tokens += [(token, Named(name)) for name, token in sorted(users.items())]

    @property
    def has_tokens(self) -> bool:
        return bool(self._tokens)

    # --- tokens and sessions -----------------------------------------------------------------
    def token(self, given: str) -> Named | None:
        """Who ``given`` (a raw token) names; every configured token is compared, always."""
        found = None
        for token, named in self._tokens:
            if same_text(token, given) and found is None:
                found = named
        return found

    def session_for(self, named: Named) -> str:
        token = next(t for t, n in self._tokens if n == named)
        return _mac(self._key, "session", token)

    def session(self, given: str) -> Named | None:
        """Who a session cookie's value names (it was derived from one of the tokens)."""
        found = None
        for token, named in self._tokens:
            if same_text(_mac(self._key, "session", token), given) and found is None:
                found = named
        return found

    # --- user ids ------------------------------------------------------------------------------
    def new_user(self) -> str:
        return _ID_PREFIX + secrets.token_urlsafe(16)

    def address_user(self, address: str) -> str:
        """The one id every unrecognised client from ``address`` shares once it has used up
        its fresh ids."""
        return _ID_PREFIX + _mac(self._key, "address", address)

    @staticmethod
    def named_user(name: str) -> str:
        return _NAMED_PREFIX + name

    def cookie(self, user: str) -> str:
        return f"{user}.{_mac(self._key, 'user', user)}"

    def user_from_cookie(self, value: str) -> str | None:
        """The signed user id in ``value``; None for anything altered, forged or malformed."""
        user, _, mac = value.rpartition(".")
        if not (user.startswith(_ID_PREFIX) and not user.startswith(_NAMED_PREFIX)):
            return None
        if len(user) > 64 or not user.isascii():
            return None
        return user if same_text(_mac(self._key, "user", user), mac) else None

"""Signed links to a job's artifacts, for chat platforms that refused an upload (413).

A link is ``{web.public_url}/files/{job}/{name}?exp=...&sig=...``: the signature is an HMAC of
the job id, artifact name and expiry time under a key kept in the data directory, so a link
opens without the web token but cannot be guessed, altered to reach another job, or kept
working past ``web.link_ttl_days`` (a link pasted into a chat is public for good otherwise). Without ``web.public_url`` there
is no address chat users could reach, and no links are made.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

__all__ = ["ArtifactLinks", "FILES_PREFIX", "load_link_key", "same_text"]

FILES_PREFIX = "/files/"


def load_link_key(data_dir: Path) -> bytes:
    """The signing key, created once (mode 0600) so links survive restarts."""
    path = data_dir / "link-signing.key"
    try:
        return bytes.fromhex(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        key = secrets.token_bytes(32)
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(key.hex())
        return key


class ArtifactLinks:
    """Makes and checks the signed, expiring artifact links."""

    def __init__(
        self, public_url: str | None, key: bytes, *, ttl_seconds: float = 7 * 86400,
        clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        self._base = public_url.rstrip("/") if public_url else None
        self._key = key
        self._ttl = ttl_seconds
        self._clock = clock

    def signature(self, job_id: str, name: str, expires: int) -> str:
        message = f"{job_id}/{name}/{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:32]

    def url(self, job_id: str, name: str) -> str | None:
        if self._base is None:
            return None
        expires = int(self._clock() + self._ttl)
        path = f"{FILES_PREFIX}{quote(job_id, safe='')}/{quote(name, safe='')}"
        return f"{self._base}{path}?exp={expires}&sig={self.signature(job_id, name, expires)}"

    def verify(self, job_id: str, name: str, signature: str, expires: str) -> bool:
        """True for an unaltered, unexpired link; any other input (non-ASCII included) is False."""
        if not (expires.isascii() and expires.isdigit() and len(expires) <= 12):
            return False
        if int(expires) < self._clock():
            return False
        return same_text(self.signature(job_id, name, int(expires)), signature)


def same_text(expected: str, given: str) -> bool:
    """Constant-time comparison of the UTF-8 bytes: ``compare_digest`` on ``str`` raises
    ``TypeError`` for non-ASCII input, and anyone can send non-ASCII."""
    return hmac.compare_digest(
        expected.encode("utf-8", "surrogatepass"), given.encode("utf-8", "surrogatepass")
    )

"""Signed links to a job's artifacts, for chat platforms that refused an upload (413).

A link is ``{web.public_url}/files/{job}/{name}?sig=...``: the signature is an HMAC of the job
id and artifact name under a key kept in the data directory, so a link opens without the web
token but cannot be guessed or altered to reach another job. Without ``web.public_url`` there
is no address chat users could reach, and no links are made.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from urllib.parse import quote

__all__ = ["ArtifactLinks", "FILES_PREFIX", "load_link_key"]

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
    """Makes and checks the signed artifact links."""

    def __init__(self, public_url: str | None, key: bytes) -> None:
        self._base = public_url.rstrip("/") if public_url else None
        self._key = key

    def signature(self, job_id: str, name: str) -> str:
        message = f"{job_id}/{name}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:32]

    def url(self, job_id: str, name: str) -> str | None:
        if self._base is None:
            return None
        path = f"{FILES_PREFIX}{quote(job_id, safe='')}/{quote(name, safe='')}"
        return f"{self._base}{path}?sig={self.signature(job_id, name)}"

    def verify(self, job_id: str, name: str, signature: str) -> bool:
        return hmac.compare_digest(self.signature(job_id, name), signature)

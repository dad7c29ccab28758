"""The durable queue. ``open_storage(url)`` picks the backend from the URL's scheme.

    async with open_storage("sqlite:///data/gouache.db") as storage: ...
    storage = await open_storage("postgresql://user@host/db")  # caller closes it

Backends are imported lazily, so ``import gouache.storage`` pulls in neither driver.
"""

from __future__ import annotations

from collections.abc import Generator
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from gouache.storage.base import (
    LeaseLost,
    QueueStats,
    Quota,
    QuotaRefused,
    Storage,
    StorageError,
    StorageUnavailable,
)
from gouache.storage.jobs import TERMINAL, Artifact, ArtifactKind, Job, JobStatus

__all__ = [
    "open_storage",
    "migrate_database",
    "Storage",
    "Quota",
    "QueueStats",
    "StorageError",
    "StorageUnavailable",
    "LeaseLost",
    "QuotaRefused",
    "Job",
    "JobStatus",
    "Artifact",
    "ArtifactKind",
    "TERMINAL",
]

SCHEMES = {
    "sqlite": "gouache.storage.sqlite:SqliteStorage",
    "postgresql": "gouache.storage.postgres:PostgresStorage",
    "postgres": "gouache.storage.postgres:PostgresStorage",
}


class OpenStorage:
    """Awaitable (``await open_storage(url)``) and async context manager (closes on exit)."""

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        scheme = urlsplit(url).scheme
        if scheme not in SCHEMES:
            raise ValueError(
                f"unsupported database URL scheme {scheme!r}: use "
                "sqlite:///path/to/file.db or postgresql://user@host/db"
            )
        self._target = SCHEMES[scheme]
        self._url = url
        self._options = options
        self._storage: Storage | None = None

    async def _open(self) -> Storage:
        import importlib

        module, _, name = self._target.partition(":")
        backend = getattr(importlib.import_module(module), name)
        return await backend.open(self._url, **self._options)

    def __await__(self) -> Generator[Any, None, Storage]:
        return self._open().__await__()

    async def __aenter__(self) -> Storage:
        self._storage = await self._open()
        return self._storage

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._storage is not None:
            await self._storage.close()


def open_storage(url: str, **options: Any) -> OpenStorage:
    """Open the backend for ``url`` and bring its schema up to date.

    Options go to the backend: ``poll_seconds`` (both), ``pool`` (an injected asyncpg pool) and
    ``max_size`` (PostgreSQL).
    """
    return OpenStorage(url, options)


async def migrate_database(url: str) -> None:
    """``gouache migrate``: opening applies pending migrations; nothing else to do."""
    async with open_storage(url):
        pass

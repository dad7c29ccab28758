"""SQLite backend: the zero-setup default (aiosqlite, WAL, BEGIN IMMEDIATE, polling wake-ups).

One connection per ``SqliteStorage``, transactions serialised by an asyncio lock (a connection
has one transaction at a time). Writers take ``BEGIN IMMEDIATE`` so a claim reads and updates
under the file's write lock; other processes on the same file wait up to ``busy_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite

from gouache.storage.base import StorageError, StorageUnavailable
from gouache.storage.manager import Conn, Row, SqlStorage
from gouache.storage.migrations import VERSION_TABLE, Migration, migrate
from gouache.storage.queries import load_queries

__all__ = ["SqliteStorage"]

T = TypeVar("T")
BUSY_TIMEOUT_MS = 5000
_BUSY_RETRIES = 3


class _SqliteConn:
    """Named queries on one aiosqlite connection; lists go in as JSON (``json_each``)."""

    def __init__(self, db: aiosqlite.Connection, queries: Any, now: float) -> None:
        self._db = db
        self._queries = queries
        self._now = now
        self.notified = False

    def _params(self, params: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"now": self._now}
        for key, value in params.items():
            out[key] = json.dumps(list(value)) if isinstance(value, list | tuple) else value
        return out

    async def fetch(self, name: str, /, **params: Any) -> list[Row]:
        async with self._db.execute(self._queries[name], self._params(params)) as cursor:
            # sqlite3.Row reads by column name like a mapping; it just is not typed as one.
            return cast("list[Row]", list(await cursor.fetchall()))

    async def fetchrow(self, name: str, /, **params: Any) -> Row | None:
        rows = await self.fetch(name, **params)
        return rows[0] if rows else None

    async def execute(self, name: str, /, **params: Any) -> None:
        if name == "notify":
            self.notified = True
        await self.fetch(name, **params)


class SqliteStorage(SqlStorage):
    dialect = "sqlite"

    def __init__(self, db: aiosqlite.Connection, url: str, poll_seconds: float = 0.25) -> None:
        super().__init__(url, poll_seconds)
        self._db = db
        self._lock = asyncio.Lock()
        self._queries = load_queries("sqlite")

    @classmethod
    async def open(cls, url: str, poll_seconds: float = 0.25) -> SqliteStorage:
        """Open (creating parent folders), configure WAL and busy timeout, apply migrations."""
        path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
        if path not in ("", ":memory:"):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            _private(Path(path))
        try:
            db = await aiosqlite.connect(path or ":memory:", isolation_level=None)
            db.row_factory = aiosqlite.Row
            await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = NORMAL")
            await db.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"cannot open SQLite database {path!r}: {exc}") from exc
        storage = cls(db, url, poll_seconds)
        try:
            await migrate(storage, "sqlite")
        except BaseException:
            await db.close()
            raise
        return storage

    async def close(self) -> None:
        await self._db.close()

    async def _run(self, body: Callable[[Conn], Awaitable[T]], *, write: bool = True) -> T:
        for attempt in range(_BUSY_RETRIES):
            try:
                return await self._transaction(body, write)
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or attempt == _BUSY_RETRIES - 1:
                    raise _mapped(exc) from exc
                await asyncio.sleep(0.05 * (attempt + 1))
            except sqlite3.Error as exc:
                raise _mapped(exc) from exc
        raise AssertionError("unreachable")

    async def _transaction(self, body: Callable[[Conn], Awaitable[T]], write: bool) -> T:
        async with self._lock:
            conn = _SqliteConn(self._db, self._queries, time.time())
            try:
                await self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                result = await body(conn)
                await self._db.execute("COMMIT")
            except BaseException:
                # Failed or cancelled anywhere, even while BEGIN or COMMIT was running on
                # aiosqlite's thread (it runs to the end there): end the transaction, or the
                # connection stays in it for good, holding the file's write lock.
                await asyncio.shield(self._end_transaction())
                raise
        if conn.notified:
            self._wakeup.fire()
        return result

    async def _end_transaction(self) -> None:
        """Roll back whatever is open; queued behind the cancelled statements, so after them."""
        with contextlib.suppress(sqlite3.Error):  # "no transaction is active": nothing to undo
            await self._db.execute("ROLLBACK")

    # --- Migratable ------------------------------------------------------------------------
    async def applied_versions(self) -> set[int]:
        async with self._lock:
            await self._db.execute(VERSION_TABLE)
            async with self._db.execute("SELECT version FROM schema_migrations") as cursor:
                return {row[0] for row in await cursor.fetchall()}

    async def apply_migration(self, migration: Migration) -> None:
        stamp = datetime.now(UTC).isoformat()
        script = (
            f"BEGIN IMMEDIATE;\n{migration.sql}\n;"
            f"INSERT INTO schema_migrations (version, name, applied_at) "
            f"VALUES ({migration.version:d}, '{migration.name}', '{stamp}');\nCOMMIT;"
        )
        async with self._lock:
            try:
                await self._db.executescript(script)
                return
            except sqlite3.Error as exc:
                error = exc
                if self._db.in_transaction:
                    await self._db.execute("ROLLBACK")
        # Another process (the bot and its worker child open together) may have won the race.
        if migration.version not in await self.applied_versions():
            raise StorageError(f"SQLite migration {migration.version} failed: {error}") from error


def _private(path: Path) -> None:
    """The database holds prompts, uploads and reply tokens: owner-only (0600). SQLite makes
    its -wal and -shm files with the database file's mode, so this covers them too."""
    if path.name.startswith("file:"):
        return  # a URI filename: the caller chose its own options
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            side = path.with_name(path.name + suffix)
            if side.stat().st_mode & 0o077:
                side.chmod(0o600)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _mapped(exc: sqlite3.Error) -> StorageError:
    if isinstance(exc, sqlite3.OperationalError) and _is_busy(exc):
        return StorageUnavailable(f"SQLite database stayed locked: {exc}")
    return StorageError(f"SQLite error: {exc}")

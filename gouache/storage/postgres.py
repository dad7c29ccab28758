"""PostgreSQL backend: production and scale-out (asyncpg pool, SKIP LOCKED claims, NOTIFY).

The pool is injected (or created from the URL and then owned); the URL is still needed for
the LISTEN connection. Each operation is one short
transaction, retried for a few seconds when the connection drops (every operation is safe to
repeat: enqueue is idempotent, claims roll back unless committed, finishing is checked against
the lease). LISTEN runs on one held connection that is re-opened after it dies; it only wakes
waiters early, polling guarantees progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg

from gouache.storage.base import StorageError, StorageUnavailable
from gouache.storage.manager import Conn, Row, SqlStorage
from gouache.storage.migrations import VERSION_TABLE, Migration, migrate
from gouache.storage.queries import load_queries

__all__ = ["PostgresStorage", "to_positional"]

T = TypeVar("T")
log = logging.getLogger(__name__)
CHANNEL = "gouache_jobs"
_MIGRATION_LOCK = 0x6A0C4E  # pg_advisory_lock key: one migrator at a time
_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_RETRYABLE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.exceptions.OperatorInterventionError,  # 57: admin shutdown (pg_terminate_backend)
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.InterfaceError,  # includes ConnectionDoesNotExistError
    asyncpg.InternalClientError,  # a pooled connection caught mid-teardown
    OSError,
    TimeoutError,
)


def to_positional(sql: str) -> tuple[str, list[str]]:
    """``:name`` -> ``$n`` (``::type`` casts untouched); returns the names in ``$n`` order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return _NAMED.sub(number, sql), names


class _PgConn:
    def __init__(self, raw: asyncpg.Connection, queries: Mapping[str, tuple[str, list[str]]]) -> None:
        self._raw = raw
        self._queries = queries

    def _args(self, name: str, params: dict[str, Any]) -> tuple[str, list[Any]]:
        sql, names = self._queries[name]
        return sql, [params[n] for n in names]

    async def fetch(self, name: str, /, **params: Any) -> list[Row]:
        sql, args = self._args(name, params)
        return list(await self._raw.fetch(sql, *args))

    async def fetchrow(self, name: str, /, **params: Any) -> Row | None:
        sql, args = self._args(name, params)
        return await self._raw.fetchrow(sql, *args)

    async def execute(self, name: str, /, **params: Any) -> None:
        sql, args = self._args(name, params)
        await self._raw.execute(sql, *args)


class PostgresStorage(SqlStorage):
    dialect = "postgres"

    def __init__(
        self,
        pool: asyncpg.Pool,
        url: str,
        *,
        owns_pool: bool = False,
        poll_seconds: float = 1.0,
        retry_seconds: float = 10.0,
    ) -> None:
        super().__init__(url, poll_seconds)
        self._pool = pool
        self._owns_pool = owns_pool
        self._retry_seconds = retry_seconds
        self._queries = {name: to_positional(sql) for name, sql in load_queries("postgres").items()}
        self._listener: asyncio.Task[None] | None = None
        self._closing = False

    @classmethod
    async def open(
        cls, url: str, *, pool: asyncpg.Pool | None = None, poll_seconds: float = 1.0,
        max_size: int = 10,
    ) -> PostgresStorage:  # fmt: skip
        """Create the pool unless one is injected, apply migrations, start listening."""
        owns = pool is None
        if pool is None:
            try:
                pool = await asyncpg.create_pool(url, min_size=1, max_size=max_size)
            except (*_RETRYABLE, asyncpg.PostgresError) as exc:
                raise StorageUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
        storage = cls(pool, url, owns_pool=owns, poll_seconds=poll_seconds)
        try:
            async with pool.acquire() as raw:
                await migrate(_Migrator(raw), "postgres")
        except BaseException:
            await storage.close()
            raise
        storage._listener = asyncio.create_task(storage._listen(), name="gouache-pg-listen")
        return storage

    async def close(self) -> None:
        self._closing = True
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._owns_pool:
            await self._pool.close()

    async def _run(self, body: Callable[[Conn], Awaitable[T]], *, write: bool = True) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._retry_seconds
        delay = 0.05
        while True:
            try:
                async with self._pool.acquire() as raw, raw.transaction():
                    return await body(_PgConn(raw, self._queries))
            except _RETRYABLE as exc:
                if loop.time() + delay > deadline:
                    raise StorageUnavailable(f"PostgreSQL unavailable: {exc!r}") from exc
                log.warning("PostgreSQL connection problem, retrying: %r", exc)
            except asyncpg.PostgresError as exc:
                raise StorageError(f"PostgreSQL error: {exc}") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _listen(self) -> None:
        """Hold one LISTEN connection of our own (outside the pool); re-open it when it dies."""
        delay = 0.1
        while not self._closing:
            try:
                raw = await asyncpg.connect(self.url, timeout=10)
                try:
                    lost = asyncio.Event()
                    raw.add_termination_listener(lambda _conn, event=lost: event.set())
                    await raw.add_listener(CHANNEL, self._on_notify)
                    self._wakeup.fire()  # anything sent while we were deaf: look now
                    delay = 0.1
                    await self._hold_listening(raw, lost)
                finally:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(raw.close(), 2)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the listener must never die
                log.warning("LISTEN connection lost, reconnecting: %r", exc)
            if not self._closing:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _hold_listening(self, raw: asyncpg.Connection, lost: asyncio.Event) -> None:
        while not lost.is_set() and not raw.is_closed():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), self.poll_seconds * 5)
            if not lost.is_set():
                await raw.execute("SELECT 1")  # notice a silently dead socket

    def _on_notify(self, _conn: object, _pid: int, _channel: str, _payload: str) -> None:
        self._wakeup.fire()


class _Migrator:
    """Runs migrations on one connection under a session advisory lock."""

    def __init__(self, raw: asyncpg.Connection) -> None:
        self._raw = raw

    async def applied_versions(self) -> set[int]:
        try:
            await self._raw.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
            try:
                await self._raw.execute(VERSION_TABLE)
            finally:
                await self._raw.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
            rows = await self._raw.fetch("SELECT version FROM schema_migrations")
        except (*_RETRYABLE, asyncpg.PostgresError) as exc:
            raise StorageUnavailable(f"cannot read the schema version: {exc}") from exc
        return {r["version"] for r in rows}

    async def apply_migration(self, migration: Migration) -> None:
        try:
            async with self._raw.transaction():
                await self._raw.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                done = await self._raw.fetchval(
                    "SELECT 1 FROM schema_migrations WHERE version = $1", migration.version
                )
                if done:
                    return  # another process applied it while we waited for the lock
                await self._raw.execute(migration.sql)
                await self._raw.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                    migration.version, migration.name, datetime.now(UTC).isoformat(),
                )  # fmt: skip
        except (*_RETRYABLE, asyncpg.PostgresError) as exc:
            raise StorageError(f"PostgreSQL migration {migration.version} failed: {exc}") from exc

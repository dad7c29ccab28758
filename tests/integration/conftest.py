"""Storage on both real backends: SQLite in tmp_path, PostgreSQL in a throwaway database.

PostgreSQL: one ``gouache_test_<random>`` database per session, created from the ``test``
database (or ``postgres``), migrated once, truncated before each test and dropped at the end.
Tests that need the server are marked ``postgres`` automatically.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gouache.storage import Storage, open_storage

PG_HOST = os.environ.get("GOUACHE_TEST_PG_HOST", "127.0.0.1:5432")
PG_ADMIN_DATABASES = ("test", "postgres")
PG_USERS = ("postgres", "root")
TABLES = "jobs, artifacts, deliveries, rate_buckets, workers, bot_flags"
FAST_POLL = 0.05

OpenStorage = Callable[..., Awaitable[Storage]]


async def _admin_connection():
    import asyncpg

    last: Exception | None = None
    for user in PG_USERS:
        for database in PG_ADMIN_DATABASES:
            try:
                conn = await asyncpg.connect(f"postgresql://{user}@{PG_HOST}/{database}", timeout=5)
                return conn, user
            except Exception as exc:  # try the next user/database pair
                last = exc
    raise RuntimeError(f"no PostgreSQL on {PG_HOST}: {last}")


def _run_sync(coro: Coroutine[object, object, str | None]) -> str | None:
    """Run on a private loop in a thread: the caller may already be inside a running loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh, migrated database for this session; dropped afterwards."""
    name = f"gouache_test_{uuid.uuid4().hex[:10]}"

    async def create() -> str:
        conn, user = await _admin_connection()
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        url = f"postgresql://{user}@{PG_HOST}/{name}"
        async with open_storage(url):  # migrate once
            pass
        return url

    async def drop() -> None:
        conn, _ = await _admin_connection()
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    try:
        url = _run_sync(create())
    except RuntimeError as exc:  # `make test` starts it (scripts/test-services.sh): never skip
        pytest.fail(f"these tests need PostgreSQL on {PG_HOST}: {exc}")
    yield url
    _run_sync(drop())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("backend") == "postgres":
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def storage_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'queue.db'}"
    url = request.getfixturevalue("pg_url")
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"TRUNCATE {TABLES} CASCADE")
    finally:
        await conn.close()
    return url


@pytest.fixture
async def open_more(storage_url: str) -> AsyncIterator[OpenStorage]:
    """Open further handles on the same database (other bot processes or workers)."""
    opened: list[Storage] = []

    async def factory(**options: object) -> Storage:
        options.setdefault("poll_seconds", FAST_POLL)
        handle = await open_storage(storage_url, **options)
        opened.append(handle)
        return handle

    yield factory
    for handle in opened:
        await handle.close()


@pytest.fixture
async def storage(open_more: OpenStorage) -> Storage:
    return await open_more()

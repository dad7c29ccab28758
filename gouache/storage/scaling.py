"""Scaling GPU workers from the queue: the SQL KEDA runs, and the read-only role it runs as.

KEDA's ``postgresql`` trigger runs one literal SQL statement and reads a number from it; it
takes no parameters. ``scaling_query`` renders the project's query (``sql/scaling.sql``) with
a model group and the images one worker serves inlined as quoted literals, so the statement KEDA runs is the one the tests run. ``ensure_reader_role`` creates
the login role KEDA connects as: it may read the three columns the query needs and nothing else
(no prompts, no tokens, no writes).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from gouache.storage.queries import read_sql

__all__ = ["scaling_query", "desired_workers", "ensure_reader_role", "ensure_reader_role_from_url",
           "READER_COLUMNS"]

READER_COLUMNS = ("status", "model", "images")
_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _literal(text: str) -> str:
    """A PostgreSQL string literal (standard_conforming_strings: quotes doubled, nothing else)."""
    if "\x00" in text:
        raise ValueError("a model name cannot contain a NUL character")
    return "'" + text.replace("'", "''") + "'"


def scaling_query(images_per_worker: int, models: Sequence[str] = ()) -> str:
    """The SQL for KEDA: workers needed for ``models`` (every model when empty), one line."""
    if isinstance(images_per_worker, bool) or not isinstance(images_per_worker, int) or images_per_worker < 1:
        raise ValueError(f"images per worker must be a whole number >= 1, got {images_per_worker!r}")
    names = [m.strip() for m in models]
    if any(not m for m in names):
        raise ValueError("a model group cannot name an empty model")
    group = f"ARRAY[{', '.join(_literal(m) for m in names)}]::text[]" if names else "NULL::text[]"
    sql = read_sql("scaling.sql")
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    body = body.replace(":models::text[]", group).replace(":per_worker::int", f"{images_per_worker}::int")
    return " ".join(body.split())


async def desired_workers(url: str, images_per_worker: int, models: Sequence[str] = ()) -> int:
    """Run ``scaling_query`` the way KEDA does (one connection, one statement)."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(scaling_query(images_per_worker, models)))
    finally:
        await conn.close()


async def ensure_reader_role(url: str, role: str, password: str) -> None:
    """Create or update ``role``: LOGIN with ``password``, SELECT on ``READER_COLUMNS`` of jobs.

    Idempotent (the migration Job runs it on every deploy); ``url`` is an owner's connection.
    """
    import asyncpg

    if not _ROLE.match(role):
        raise ValueError(f"role name {role!r}: use lower-case letters, digits and _ (at most 63)")
    if not password:
        raise ValueError("the KEDA role needs a password")
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            secret = await conn.fetchval("SELECT quote_literal($1::text)", password)
            database = await conn.fetchval("SELECT quote_ident(current_database())")
            exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
            verb = "ALTER" if exists else "CREATE"
            await conn.execute(f"{verb} ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {secret}")
            await conn.execute(f"GRANT CONNECT ON DATABASE {database} TO {role}")
            await conn.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
            await conn.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}")
            await conn.execute(f"GRANT SELECT ({', '.join(READER_COLUMNS)}) ON jobs TO {role}")
    finally:
        await conn.close()


async def ensure_reader_role_from_url(owner_url: str, reader_url: str) -> str:
    """``ensure_reader_role`` with the user and password of KEDA's own connection URL.

    One secret (the URL KEDA connects with) then says both who KEDA is and how it logs in.
    """
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(reader_url)
    if parts.scheme not in ("postgresql", "postgres") or not parts.username or not parts.password:
        raise ValueError("the KEDA connection must be postgresql://USER:PASSWORD@HOST/DB")
    role = unquote(parts.username)
    await ensure_reader_role(owner_url, role, unquote(parts.password))
    return role

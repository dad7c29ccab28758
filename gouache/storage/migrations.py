"""Numbered schema migrations, applied in order when storage opens; versions are recorded.

Files are ``sql/migrations/NNNN_<name>.<dialect>.sql``. Each migration runs in its own
transaction together with the row that records it, so a crash leaves no half-applied version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Protocol

from gouache.storage.queries import Dialect

__all__ = ["Migration", "Migratable", "discover", "migrate", "VERSION_TABLE"]

VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL
)
"""
_FILE = re.compile(r"^(\d{4})_(\w+)\.(sqlite|postgres)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


class Migratable(Protocol):
    """What a backend offers the runner: read applied versions, apply one atomically."""

    async def applied_versions(self) -> set[int]: ...

    async def apply_migration(self, migration: Migration) -> None: ...


def discover(dialect: Dialect) -> list[Migration]:
    """Every migration for ``dialect``, by version; a gap or duplicate is a packaging bug."""
    folder = resources.files("gouache.storage").joinpath("sql", "migrations")
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if not match or match.group(3) != dialect:
            continue
        version = int(match.group(1))
        if version in found:
            raise RuntimeError(f"two {dialect} migrations numbered {version}")
        found[version] = Migration(version, match.group(2), entry.read_text("utf-8"))
    versions = sorted(found)
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"{dialect} migrations are not numbered 1..n: {versions}")
    return [found[v] for v in versions]


async def migrate(target: Migratable, dialect: Dialect) -> list[int]:
    """Apply what is missing; returns the versions applied now (empty when up to date)."""
    known = discover(dialect)
    applied = await target.applied_versions()
    newest = max(applied, default=0)
    if newest > len(known):
        raise RuntimeError(
            f"database schema version {newest} is newer than this gouache ({len(known)}): upgrade"
        )
    done = []
    for migration in known:
        if migration.version not in applied:
            await target.apply_migration(migration)
            done.append(migration.version)
    return done

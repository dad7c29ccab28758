"""Migration numbering: starts at 1, unique, the same on both dialects; a reserved gap is fine."""

from __future__ import annotations

from gouache.storage.migrations import Migration, discover, migrate


class _Target:
    def __init__(self, applied: set[int]) -> None:
        self.applied = set(applied)

    async def applied_versions(self) -> set[int]:
        return set(self.applied)

    async def apply_migration(self, migration: Migration) -> None:
        self.applied.add(migration.version)


def test_both_dialects_have_the_same_versions() -> None:
    versions = [m.version for m in discover("sqlite")]
    assert versions[0] == 1 and versions == sorted(set(versions))
    assert [m.version for m in discover("postgres")] == versions
    assert 4 in versions  # bot_flags (0003 is reserved by a parallel branch)


async def test_missing_versions_are_applied_even_below_the_newest() -> None:
    known = [m.version for m in discover("sqlite")]
    target = _Target({known[-1]})  # e.g. a later-merged lower number
    done = await migrate(target, "sqlite")
    assert done == known[:-1] and target.applied == set(known)
    assert await migrate(target, "sqlite") == []

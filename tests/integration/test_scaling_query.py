"""The SQL KEDA runs to size each GPU worker Deployment, on a PostgreSQL migrated by gouache.

The statement under test is the literal one ``gouache scaling-query`` prints and the manifests
carry, run over one plain connection the way KEDA's postgresql scaler does.
"""

from __future__ import annotations

import asyncpg
import pytest

from gouache.storage import open_storage
from gouache.storage.scaling import desired_workers, ensure_reader_role, scaling_query
from tests.integration.conftest import TABLES
from tests.support.factories import make_request

pytestmark = pytest.mark.postgres
GROUP_A = ["sd15", "sd15-depth"]
GROUP_B = ["sdxl"]


@pytest.fixture
async def pg(pg_url: str) -> str:
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(f"TRUNCATE {TABLES} CASCADE")
    finally:
        await conn.close()
    return pg_url


async def _enqueue(storage, model: str, images: list[int], user: str = "ann") -> list[str]:
    ids = []
    for n in images:
        job, _ = await storage.enqueue(make_request(user=user, model=model, count=n))
        ids.append(job.id)
    return ids


async def test_an_empty_queue_needs_no_worker(pg):
    async with open_storage(pg):
        pass
    assert await desired_workers(pg, 16, GROUP_A) == 0
    assert await desired_workers(pg, 16) == 0


async def test_a_known_backlog_gives_each_group_its_worker_count(pg):
    async with open_storage(pg) as storage:
        # Finished work is history: it never asks for a worker.
        done = await _enqueue(storage, "sd15", [4, 4, 4], user="dan")
        claimed = await storage.claim_batch("w0", 12, 60, by="shape_key")
        assert sorted(j.id for j in claimed) == sorted(done)
        for job_id in done:
            await storage.complete(job_id, "w0", [])
        # Group A: 37 images over two models, some of them running; B: 5 images.
        await _enqueue(storage, "sd15", [4, 4, 4, 4, 4, 4], user="ann")
        await _enqueue(storage, "sd15-depth", [4, 4, 4, 1], user="bob")
        await _enqueue(storage, "sdxl", [4, 1], user="cid")
        running = await storage.claim_batch("w1", 8, 60, by="shape_key", models=GROUP_A)
        assert running  # running images still count: they hold a worker
    assert await desired_workers(pg, 16, GROUP_A) == 3  # ceil(37 / 16)
    assert await desired_workers(pg, 16, GROUP_B) == 1  # ceil(5 / 16)
    assert await desired_workers(pg, 16) == 3  # ceil(42 / 16): one group for every model
    assert await desired_workers(pg, 4, GROUP_B) == 2
    assert await desired_workers(pg, 16, ["unknown"]) == 0


async def test_the_query_reads_the_active_model_index(pg):
    async with open_storage(pg):
        pass
    conn = await asyncpg.connect(pg)
    try:
        await conn.execute("SET enable_seqscan = off")  # a tiny table: ask whether it *can*
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + scaling_query(16, GROUP_A)))
    finally:
        await conn.close()
    assert "jobs_active_model_idx" in plan, plan


async def test_the_keda_role_reads_the_count_and_nothing_else(pg):
    async with open_storage(pg) as storage:
        await _enqueue(storage, "sdxl", [4, 4, 4, 4, 1])
    await ensure_reader_role(pg, "gouache_keda_test", "s3cret'pass")
    await ensure_reader_role(pg, "gouache_keda_test", "s3cret'pass")  # idempotent: every deploy
    host_db = pg.split("@", 1)[1]
    reader = f"postgresql://gouache_keda_test:{'s3cret%27pass'}@{host_db}"
    try:
        assert await desired_workers(reader, 16, GROUP_B) == 2
        conn = await asyncpg.connect(reader)
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch("SELECT params FROM jobs")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("UPDATE jobs SET status = 'queued'")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch("SELECT * FROM artifacts")
        finally:
            await conn.close()
    finally:
        admin = await asyncpg.connect(pg)
        try:
            await admin.execute("DROP OWNED BY gouache_keda_test")
            await admin.execute("DROP ROLE gouache_keda_test")
        finally:
            await admin.close()


def test_the_rendered_query_quotes_model_names_and_refuses_bad_input():
    sql = scaling_query(16, ["it's"])
    assert "ARRAY['it''s']::text[]" in sql and "16::int" in sql and ":" not in sql.replace("::", "")
    assert "NULL::text[]" in scaling_query(8)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="images per worker"):
            scaling_query(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty model"):
        scaling_query(16, ["sd15", " "])


def test_the_cli_prints_the_query_the_manifests_carry(capsys):
    from gouache.cli import main

    assert main(["scaling-query", "--images-per-worker", "16", "--models", "sd15, sd15-depth"]) == 0
    assert capsys.readouterr().out.strip() == scaling_query(16, GROUP_A)
    assert main(["scaling-query", "--images-per-worker", "0"]) == 2
    assert "images per worker must be a whole number" in capsys.readouterr().err


async def test_the_cli_creates_the_keda_role_from_keda_s_own_url(pg, tmp_path, capsys):
    import asyncio

    from gouache.cli import main

    async with open_storage(pg) as storage:
        await _enqueue(storage, "sdxl", [4])
    host_db = pg.split("@", 1)[1]
    secret = tmp_path / "keda-connection"
    secret.write_text(f"postgresql://gouache_keda_cli:pw%2Fwith%40signs@{host_db}\n")
    try:
        code = await asyncio.to_thread(main, ["keda-role", "--database-url", pg, "--connection-file", str(secret)])
        assert code == 0 and "gouache_keda_cli" in capsys.readouterr().out
        reader = secret.read_text().strip()
        assert await desired_workers(reader, 16, GROUP_B) == 1
    finally:
        admin = await asyncpg.connect(pg)
        try:
            await admin.execute("DROP OWNED BY gouache_keda_cli")
            await admin.execute("DROP ROLE IF EXISTS gouache_keda_cli")
        finally:
            await admin.close()
    secret.write_text(f"postgresql://nopassword@{host_db}\n")
    code = await asyncio.to_thread(main, ["keda-role", "--database-url", pg, "--connection-file", str(secret)])
    assert code == 2 and "postgresql://USER:PASSWORD@HOST/DB" in capsys.readouterr().err

"""Scale-down under load: SIGTERM a busy `gouache worker` on PostgreSQL, as KEDA does.

    .venv/bin/python benchmarks/scale_down.py     # writes benchmarks/results/scale_down.json

Two real `gouache worker` processes on the timed fake engine (``tests.support.engines:
TimedEngine``) share a throwaway PostgreSQL database. "leaving" holds a full running batch
whose lanes need far longer than its ``worker.drain_seconds``; "staying" runs a batch of its
own and has room for more. The harness
sends SIGTERM to "leaving" (what Kubernetes does to a pod KEDA scales away) and reads the
verdict from the database only: jobs lost, stored twice or with an attempt counted for the hand
back, the leaving worker's exit code, and how long after the SIGTERM each released job started
again on "staying". ``tests/integration/test_scale_down.py`` runs the same scenario.
"""

# ruff: noqa: E402  (the import path is fixed before the imports, as in benchmarks/chaos.py)
from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.insert(0, str(_HERE.parent))

import asyncio
import json
import os
import platform
import signal
import subprocess
import tempfile
import time
import uuid
from typing import Any

import asyncpg

from gouache.storage import open_storage
from tests.support.factories import make_request

REPO = _HERE.parent
RESULTS = REPO / "benchmarks" / "results" / "scale_down.json"
PG_HOST = os.environ.get("GOUACHE_TEST_PG_HOST", "127.0.0.1:5432")
ENGINE = "tests.support.engines:TimedEngine"
BATCH = 8  # 1-image jobs: a full batch of 16 UNet rows with CFG
STEPS = 200
LEAVING_STEP_S = 0.1  # TimedEngine: (a + b * lanes) / 20 per step, b = 0: a lane takes 20 s
STAYING_STEP_S = 0.02
DRAIN_SECONDS = 0.5  # far less than a lane needs on "leaving"


def _spawn(url: str, name: str, max_rows: int, step_s: float, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "GOUACHE_WORKER__ENGINE": ENGINE,
           "GOUACHE_WORKER__LEASE_SECONDS": "30", "GOUACHE_WORKER__HEARTBEAT_SECONDS": "0.5",
           "GOUACHE_WORKER__POLL_SECONDS": "0.1", "GOUACHE_WORKER__DRAIN_SECONDS": str(DRAIN_SECONDS),
           "GOUACHE_BATCHING__MAX_ROWS": str(max_rows), "GOUACHE_BATCHING__BATCH_WINDOW_MS": "50",
           "GOUACHE_TEST_BATCH_A": str(step_s * 20), "GOUACHE_TEST_BATCH_B": "0"}  # fmt: skip
    cmd = [sys.executable, "-m", "gouache", "worker", "--worker-id", name, "--database-url", url,
           "--data-dir", str(log.parent / name)]  # fmt: skip
    with log.open("ab") as out:
        return subprocess.Popen(cmd, env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip


async def _until(conn: asyncpg.Connection, sql: str, *args: Any, timeout: float = 60.0,
                 logs: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await conn.fetchval(sql, *args):
            return
        await asyncio.sleep(0.05)
    jobs = await conn.fetch("SELECT worker_id, status, count(*) AS n FROM jobs GROUP BY 1, 2 ORDER BY 1, 2")
    tails = "".join(f"\n--- {log.name}\n" + log.read_text(errors="replace")[-3000:]
                    for log in sorted(logs.glob("*.log"))) if logs else ""  # fmt: skip
    raise TimeoutError(f"not within {timeout:.0f}s: {sql}\njobs: {[dict(r) for r in jobs]}{tails}")


async def scale_down(url: str, workdir: Path) -> dict[str, Any]:
    """The scenario on an empty, migrated database at ``url``; returns the figures."""
    workdir.mkdir(parents=True, exist_ok=True)
    storage = await open_storage(url)
    conn = await asyncpg.connect(url)
    procs: list[subprocess.Popen[bytes]] = []
    ids: list[str] = []

    async def enqueue(tag: str) -> None:
        for i in range(BATCH):
            job, _ = await storage.enqueue(make_request(user=f"{tag}{i % 4}", steps=STEPS))
            ids.append(job.id)

    try:
        # "leaving" alone takes a full batch; "staying" comes up and takes a batch of its own,
        # with room left for what "leaving" will hand back.
        leaving = _spawn(url, "leaving", 2 * BATCH, LEAVING_STEP_S, workdir / "leaving.log")
        procs.append(leaving)
        await _until(conn, "SELECT 1 FROM workers WHERE id = 'leaving'", logs=workdir)
        await enqueue("a")
        held = "SELECT count(*) >= $1 FROM jobs WHERE worker_id = $2 AND status = 'running' AND progress > 0"
        await _until(conn, held, BATCH, "leaving", logs=workdir)
        procs.append(_spawn(url, "staying", 6 * BATCH, STAYING_STEP_S, workdir / "staying.log"))
        await _until(conn, "SELECT 1 FROM workers WHERE id = 'staying'", logs=workdir)
        await enqueue("b")
        # "staying" has taken its own batch: each of its jobs has stepped, or already finished
        # (a lane there is short, and on a loaded machine the first may end before the last starts).
        taken = ("SELECT count(*) >= $1 FROM jobs WHERE worker_id = $2 AND "
                 "(status = 'succeeded' OR (status = 'running' AND progress > 0))")  # fmt: skip
        await _until(conn, taken, BATCH, "staying", logs=workdir)
        holding = [r["id"] for r in await conn.fetch(
            "SELECT id FROM jobs WHERE worker_id = 'leaving' AND status = 'running'")]  # fmt: skip
        sigterm_at = time.time()
        leaving.send_signal(signal.SIGTERM)
        exit_code = await asyncio.to_thread(leaving.wait, 30)
        exited_after = time.time() - sigterm_at
        await _until(conn, "SELECT count(*) = 0 FROM jobs WHERE status IN ('queued', 'running')",
                     timeout=120)  # fmt: skip
        rows = await conn.fetch(
            "SELECT id, status, attempts, worker_id, extract(epoch FROM started_at)::float8 AS started "
            "FROM jobs WHERE id = ANY($1::text[])", ids,
        )  # fmt: skip
        images = {r["job_id"]: r["n"] for r in await conn.fetch(
            "SELECT job_id, count(*) AS n FROM artifacts WHERE kind = 'image' GROUP BY job_id")}  # fmt: skip
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
        await conn.close()
        await storage.close()
    by_id = {r["id"]: r for r in rows}
    released = [by_id[i] for i in holding if by_id[i]["worker_id"] == "staying"]
    rerun = sorted(r["started"] - sigterm_at for r in released)
    return {
        "jobs": len(ids),
        "held_by_leaving_at_sigterm": len(holding),
        "released_and_rerun": len(released),
        "finished_by_leaving": sum(1 for i in holding if by_id[i]["worker_id"] == "leaving"),
        "jobs_lost": sum(1 for r in rows if r["status"] != "succeeded"),
        "duplicate_artifacts": sum(max(0, images.get(i, 0) - 1) for i in ids),
        "missing_artifacts": sum(1 for i in ids if images.get(i, 0) == 0),
        "released_attempts_counted": sum(1 for r in released if r["attempts"] != 1),
        "leaving_exit_code": exit_code,
        "leaving_exited_after_s": round(exited_after, 3),
        "drain_seconds": DRAIN_SECONDS,
        "rerun_after_sigterm_s_max": round(max(rerun), 3) if rerun else None,
        "rerun_after_sigterm_s_median": round(rerun[len(rerun) // 2], 3) if rerun else None,
    }


async def _throwaway_database() -> tuple[str, str]:
    admin = await asyncpg.connect(f"postgresql://postgres@{PG_HOST}/postgres")
    name = f"gouache_scale_{uuid.uuid4().hex[:8]}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return f"postgresql://postgres@{PG_HOST}/{name}", name


async def _main() -> dict[str, Any]:
    url, name = await _throwaway_database()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            figures = await scale_down(url, Path(tmp))
    finally:
        admin = await asyncpg.connect(f"postgresql://postgres@{PG_HOST}/postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
    figures["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}"
    return figures


if __name__ == "__main__":
    result = asyncio.run(_main())
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))

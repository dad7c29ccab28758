"""The KEDA scaling query's cost on a table with a long history (PostgreSQL).

    .venv/bin/python benchmarks/scaling_query.py   # writes benchmarks/results/scaling_query.json

A throwaway database migrated by gouache gets 100,000 finished jobs (the history a busy bot
keeps) and a backlog of 40 queued or running jobs over two model groups, inserted in bulk
with the columns enqueue writes. Then the literal statement ``gouache scaling-query`` prints
is run the way KEDA runs it, one connection, many times: p50/p99 of the server-side execution
time (EXPLAIN ANALYZE) and of the client round trip, and whether the plan used
``jobs_active_model_idx``. The same is measured with the index dropped, for comparison.
"""

# ruff: noqa: E402
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
import time
import uuid
from typing import Any

import asyncpg

from gouache.storage import open_storage
from gouache.storage.scaling import scaling_query

RESULTS = _HERE / "results" / "scaling_query.json"
PG_HOST = os.environ.get("GOUACHE_TEST_PG_HOST", "127.0.0.1:5432")
FINISHED = 100_000
RUNS = 300
GROUP = ["sd15", "dreamshaper"]

SEED = """
INSERT INTO jobs (id, platform, request_id, user_id, kind, params, batch_key, shape_key, model,
                  images, status, attempts, created_at, finished_at, started_at)
SELECT md5(g::text || $1), 'discord', 'r' || g || $1, 'u' || (g % 500), 'imagine',
       jsonb_build_object('model', m, 'steps', 20), m || '|512x512|20', m || '|512x512', m,
       1 + g % 4, $2, CASE WHEN $2 = 'queued' THEN 0 ELSE 1 END,
       now() - make_interval(secs => g), CASE WHEN $2 = 'succeeded' THEN now() END, now()
FROM generate_series(1, $3) AS g,
     LATERAL (SELECT (ARRAY['sd15', 'dreamshaper', 'sdxl'])[1 + g % 3] AS m) AS pick
"""


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


async def _measure(conn: asyncpg.Connection, sql: str) -> dict[str, Any]:
    server, client = [], []
    for _ in range(RUNS):
        started = time.perf_counter()
        await conn.fetchval(sql)
        client.append((time.perf_counter() - started) * 1000)
        plan = (await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + sql))
        server.append(float(json.loads(plan)[0]["Execution Time"]) if isinstance(plan, str)
                      else float(plan[0]["Execution Time"]))  # fmt: skip
    text = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql))
    return {"workers": await conn.fetchval(sql), "server_ms_p50": _pct(server, 0.5),
            "server_ms_p99": _pct(server, 0.99), "round_trip_ms_p50": _pct(client, 0.5),
            "round_trip_ms_p99": _pct(client, 0.99),
            "uses_active_model_index": "jobs_active_model_idx" in text}  # fmt: skip


async def main() -> dict[str, Any]:
    admin = await asyncpg.connect(f"postgresql://postgres@{PG_HOST}/postgres")
    name = f"gouache_scaling_{uuid.uuid4().hex[:8]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql://postgres@{PG_HOST}/{name}"
    try:
        async with open_storage(url):
            pass
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(SEED, "h", "succeeded", FINISHED)
            await conn.execute(SEED, "q", "queued", 30)
            await conn.execute(SEED, "r", "running", 10)
            await conn.execute("VACUUM ANALYZE jobs")
            sql = scaling_query(16, GROUP)
            with_index = await _measure(conn, sql)
            await conn.execute("DROP INDEX jobs_active_model_idx")
            await conn.execute("ANALYZE jobs")
            without_index = await _measure(conn, sql)
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    return {
        "finished_jobs": FINISHED, "active_jobs": 40, "runs": RUNS, "query": sql,
        "with_index": with_index, "without_index": without_index,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
    }  # fmt: skip


if __name__ == "__main__":
    figures = asyncio.run(main())
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))

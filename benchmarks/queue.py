"""Queue benchmark: many simulated users, real admission, real storage, a null engine.

    .venv/bin/python benchmarks/queue.py           # full run, SQLite and PostgreSQL
    .venv/bin/python benchmarks/queue.py --quick   # a few seconds per backend

Workers claim batches with the real ``claim_batch`` (fair order, batch window) and "generate"
for ``a + b * images`` seconds, then complete with one small artifact per job. Reports jobs/s,
queue wait (claim time minus enqueue time) p50/p95, mean batch occupancy (images / max), and
admission latency p50/p95; writes ``benchmarks/results/queue.json``. No torch import.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the stdlib ``queue`` module: drop its folder from the import path
# before anything (aiosqlite, concurrent.futures) imports ``queue``; add the repository root.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402

from gouache.bot.admission import Admission  # noqa: E402
from gouache.config import Admission as Policy  # noqa: E402
from gouache.request import Kind, Origin, Request  # noqa: E402
from gouache.storage import Artifact, ArtifactKind, Storage, open_storage  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "queue.json"
PG_ADMIN = os.environ.get("GOUACHE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass(frozen=True)
class Scenario:
    users: int
    jobs_per_user: int
    arrival_rate: float  # jobs per second, all users together (Poisson)
    workers: int
    max_images: int
    window_seconds: float
    batch_a: float  # seconds per engine call
    batch_b: float  # seconds per image in it
    lease_seconds: float = 30.0


FULL = Scenario(users=50, jobs_per_user=12, arrival_rate=120.0, workers=2, max_images=8,
                window_seconds=0.05, batch_a=0.05, batch_b=0.01)  # fmt: skip
QUICK = Scenario(users=20, jobs_per_user=5, arrival_rate=80.0, workers=2, max_images=8,
                 window_seconds=0.05, batch_a=0.05, batch_b=0.01)  # fmt: skip


def _request(user: int, n: int, rng: random.Random) -> Request:
    steps = 30 if rng.random() < 0.8 else 20  # two batch keys, mostly the common one
    return Request(
        kind=Kind.IMAGINE, prompt=f"bench {user}/{n}", model="builtin:tiny", width=512,
        height=512, steps=steps, guidance=7.0, sampler="euler-a", seed=rng.randrange(2**31),
        count=1 if rng.random() < 0.7 else 2,
        origin=Origin("web", f"bench-{user}-{n}-{uuid.uuid4().hex[:6]}", f"user{user}"),
    )  # fmt: skip


async def _worker(storage: Storage, name: str, s: Scenario, stop: asyncio.Event, occupancy: list[float]) -> None:
    while not stop.is_set():
        batch = await storage.claim_batch(name, s.max_images, s.lease_seconds, s.window_seconds)
        if not batch:
            await storage.wait_for_event(0.05)
            continue
        images = sum(job.images for job in batch)
        occupancy.append(min(1.0, images / s.max_images))
        await asyncio.sleep(s.batch_a + s.batch_b * images)  # the null engine
        for job in batch:
            art = Artifact(job.id, "image-0.png", ArtifactKind.IMAGE, "image/png", b"\x89PNG" + bytes(64))
            await storage.complete(job.id, name, [art])


async def _producers(admission: Admission, s: Scenario, latencies: list[float]) -> list[str]:
    rng = random.Random(7)
    order = [(u, n) for u in range(s.users) for n in range(s.jobs_per_user)]
    rng.shuffle(order)
    ids: list[str] = []
    pending: set[asyncio.Task[None]] = set()

    async def submit(user: int, n: int) -> None:
        t0 = time.perf_counter()
        admitted = await admission.admit(_request(user, n, rng))
        latencies.append(time.perf_counter() - t0)
        ids.append(admitted.job.id)

    for user, n in order:
        task = asyncio.create_task(submit(user, n))
        pending.add(task)
        task.add_done_callback(pending.discard)
        await asyncio.sleep(rng.expovariate(s.arrival_rate))
    await asyncio.gather(*pending)
    return ids


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else 0.0


async def run_backend(url: str, s: Scenario) -> dict[str, object]:
    handles = [await open_storage(url, poll_seconds=0.05) for _ in range(s.workers + 1)]
    bot, workers = handles[0], handles[1:]
    policy = Policy(rate_per_minute=1e6, burst=10_000, max_pending_per_user=10_000, max_queue=100_000)
    admission = Admission(bot, policy)
    stop, occupancy, latencies = asyncio.Event(), [], []
    tasks = [asyncio.create_task(_worker(w, f"w{i}", s, stop, occupancy)) for i, w in enumerate(workers)]
    start = time.perf_counter()
    try:
        ids = await _producers(admission, s, latencies)
        while (await bot.stats()).queued_jobs or (await bot.stats()).running_jobs:
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - start
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    jobs = [await bot.get_job(job_id) for job_id in ids]
    waits = [(j.started_at - j.created_at).total_seconds() for j in jobs if j.started_at]
    for handle in handles:
        await handle.close()
    return {
        "jobs": len(jobs),
        "images": sum(j.images for j in jobs),
        "seconds": round(elapsed, 3),
        "jobs_per_second": round(len(jobs) / elapsed, 2),
        "queue_wait_p50_ms": round(1000 * _pct(waits, 0.5), 1),
        "queue_wait_p95_ms": round(1000 * _pct(waits, 0.95), 1),
        "mean_batch_occupancy": round(statistics.fmean(occupancy), 3),
        "batches": len(occupancy),
        "admission_p50_ms": round(1000 * _pct(latencies, 0.5), 2),
        "admission_p95_ms": round(1000 * _pct(latencies, 0.95), 2),
    }


async def _with_pg_database(s: Scenario) -> dict[str, object]:
    import asyncpg

    name = f"gouache_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        base = PG_ADMIN.rsplit("/", 1)[0]
        return await run_backend(f"{base}/{name}", s)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run (a few seconds)")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    s = QUICK if args.quick else FULL
    results: dict[str, object] = {}
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            results["sqlite"] = await run_backend(f"sqlite:///{tmp}/bench.db", s)
        print("sqlite   ", json.dumps(results["sqlite"]))
    if args.backend in ("postgres", "both"):
        results["postgres"] = await _with_pg_database(s)
        print("postgres ", json.dumps(results["postgres"]))
    report = {
        "scenario": {**asdict(s), "mode": "quick" if args.quick else "full"},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))

"""Chaos run: real processes on loopback, load and faults together, invariants and figures.

    nice -n 10 .venv/bin/python benchmarks/chaos.py                  # full run, both backends
    .venv/bin/python benchmarks/chaos.py --config ci --backend sqlite  # the CI size (seconds)

What runs: one `gouache run --no-worker` (the web API and the Slack HTTP endpoint, talking to a
local fake Slack) and two `gouache worker` processes sharing the database (the scale-out shape),
all at DEBUG log level. The engine is the real one on ``builtin:demo`` (the CI size may use the
timed fake), wrapped by ``tests.support.engines:PoisonableEngine`` so one poison prompt kills
its worker on every attempt. The harness drives everything from outside, reading only the
database and the fakes, never the engine's internals:

1. Load: a burst of ``users`` submissions at once (web API and signed Slack slash commands and
   app mentions; 20% of the Slack ones are sent again with ``X-Slack-Retry-Num``), then a
   Poisson stream. A submission that meets a dead service is retried the way its sender would
   (the web client with the same ``Idempotency-Key``, Slack events with the same event id,
   slash commands retyped by the user).
2. Faults: SIGKILL of worker processes at random moments, each aimed at a phase read from the
   database (claiming: no job held while work is queued; mid-step: 0 < progress < 1;
   decode/store: a held job with every step done, not yet stored); ``pg_terminate_backend`` of every gouache
   backend; one PostgreSQL server restart (full run only); the service SIGKILLed and started
   again; one poison job. A worker holding a job that is on its last attempts is not killed:
   the queue promises at-least-once within ``max_attempts``, and the harness stays inside it.
3. Invariants, from the database and the fake Slack: every accepted job succeeded except the
   poison job (dead after exactly ``max_attempts``); each job has exactly its images; each
   chat request got exactly one result post; nothing queued or running; every finished job
   has a delivery receipt; no secret (tokens, signing secret, database password, web token,
   ``response_url``s) in any log line.
4. Figures: ``benchmarks/results/chaos.json`` and the table in docs/benchmarks.md.

Everything is bounded (a deadline per run) and every process is killed on the way out, even
when the harness itself fails; the PostgreSQL server is started again if it is down.
"""

# ruff: noqa: E402  (the import path is fixed before the imports, as in benchmarks/queue.py)
from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/queue.py is named like the stdlib ``queue`` module: take this folder off the
# import path before anything imports ``queue``, and put the repository root on it.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(_HERE.parent) not in sys.path:
    sys.path.insert(0, str(_HERE.parent))

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import platform
import random
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import aiohttp

from tests.fakes.fake_slack import FakeSlack, SlackSender
from tests.support.engines import EXIT_POISONED, POISON

REPO = _HERE.parent
RESULTS = REPO / "benchmarks" / "results" / "chaos.json"
README = REPO / "docs" / "benchmarks.md"  # its chaos table
README_BEGIN, README_END = "<!-- chaos:begin -->", "<!-- chaos:end -->"
PG_HOST = os.environ.get("GOUACHE_TEST_PG_HOST", "127.0.0.1:5432")
PG_ADMINS = [f"postgresql://{u}@{PG_HOST}/{d}" for u in ("postgres", "root") for d in ("test", "postgres")]
SLACK_PATH = "/slack/events"
ACK_TARGET_S = 3.0
RECOVERY_TARGET_S = 10.0
QUIET_BEFORE_RESTART = 45.0  # no worker kills before the server restart (a start takes ~25 s here)
PROGRESS_EVERY = float(os.environ.get("GOUACHE_CHAOS_PROGRESS", "0") or 0)  # seconds; 0: quiet
TAG = re.compile(r"tag-[a-z]\d{5}")


@dataclass(frozen=True)
class Config:
    name: str
    inner_engine: str  # what PoisonableEngine wraps
    users: int  # the burst: one submission per user, all at once
    stream_jobs: int  # then a Poisson stream from the same users
    stream_rate: float  # submissions per second
    worker_kills: int  # at least this many SIGKILLs of worker processes
    pg_terminations: int  # pg_terminate_backend rounds (PostgreSQL only)
    pg_restart: bool  # restart the server once (PostgreSQL only; never in CI)
    service_restarts: int  # SIGKILL `gouache run` and start it again
    deadline_seconds: float  # the whole run, start to verdict
    steps: tuple[int, ...] = (4, 4, 4, 6)  # drawn per job: two batch keys, mostly one
    two_image_share: float = 0.2
    slack_share: float = 0.4
    slack_retry_share: float = 0.2
    workers: int = 2
    max_attempts: int = 5
    lease_seconds: float = 8.0
    heartbeat_seconds: float = 1.0
    batch_window_ms: int = 200
    max_batch_images: int = 8
    kill_wait: tuple[float, float] = (0.2, 2.5)  # after a worker is ready, before aiming
    seed: int = 17
    timed_batch: tuple[float, float] = (0.4, 0.05)  # TimedEngine's a + b * images


FULL = Config(
    name="full", inner_engine="gouache.generation.loop.engine:Engine", users=100, stream_jobs=400,
    stream_rate=0.8, worker_kills=52, pg_terminations=8, pg_restart=True, service_restarts=2,
    deadline_seconds=1500,
)  # fmt: skip
CI = Config(
    name="ci", inner_engine="tests.support.engines:TimedEngine", users=16, stream_jobs=20,
    stream_rate=1.5, worker_kills=4, pg_terminations=2, pg_restart=False, service_restarts=1,
    deadline_seconds=330, max_attempts=4, lease_seconds=2.0, heartbeat_seconds=0.3,
    batch_window_ms=100, kill_wait=(0.1, 0.8),
)  # fmt: skip
CONFIGS = {"full": FULL, "ci": CI}


# --- processes -------------------------------------------------------------------------------
def _die_with_parent() -> None:
    """Linux: a child is SIGKILLed when the harness dies, however it dies: no orphans."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Proc:
    """One gouache process with its log in a file; every one is registered for cleanup."""

    live: set[Proc] = set()

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.process: asyncio.subprocess.Process | None = None
        self.started = 0.0

    async def start(self) -> Proc:
        with self.log.open("ab") as fh:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv, env=self.env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=fh,
                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
            )  # fmt: skip
        self.started = time.monotonic()
        Proc.live.add(self)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def wait_log(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text())
            if found:
                return found
            if not self.alive:
                raise ChaosError(f"{self.name} exited ({self.returncode}) before {pattern!r}")
            await asyncio.sleep(0.1)
        raise ChaosError(f"{self.name}: {pattern!r} not logged within {timeout:.0f}s")

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.returncode

    def kill(self) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    async def wait(self, timeout: float = 30.0) -> int | None:
        if self.process is None:
            return None
        try:
            code = await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.kill()
            code = await self.process.wait()
        Proc.live.discard(self)
        return code

    async def stop(self, timeout: float = 20.0) -> int | None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
        return await self.wait(timeout)

    @classmethod
    async def kill_all(cls) -> None:
        for proc in list(cls.live):
            proc.kill()
        for proc in list(cls.live):
            await proc.wait(10)


def _kill_leftovers_sync() -> None:
    for proc in list(Proc.live):
        proc.kill()


class ChaosError(Exception):
    """The run could not go on (a process that never came up, the deadline)."""


# --- the database, read from outside ------------------------------------------------------------
class Db:
    """The harness's own view of the queue: a few read queries and the fault injections."""

    async def running_for(self, worker_id: str) -> list[tuple[str, float, int, str]]:
        raise NotImplementedError

    async def queued(self) -> int:
        raise NotImplementedError

    async def queued_attempts(self) -> int:
        """The most attempts among queued jobs (poison aside): what a claim may pick up."""
        raise NotImplementedError

    async def finished_after(self, epoch: float) -> int:
        raise NotImplementedError

    async def dump(self) -> dict[str, list[dict[str, Any]]]:
        raise NotImplementedError

    async def counts(self) -> dict[str, int]:
        data = await self.dump()
        found = Counter(j["status"] for j in data["jobs"])
        found["delivered"] = len(data["deliveries"])
        return dict(found)

    async def close(self) -> None:
        pass


_JOB_COLUMNS = "id, platform, request_id, status, attempts, images, error, params, worker_id"


class SqliteDb(Db):
    def __init__(self, path: Path) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="chaos-sqlite")
        self._path = path
        self._conn: sqlite3.Connection | None = None

    def _q(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        if self._conn is None:
            self._conn = sqlite3.connect(self._path, timeout=10, check_same_thread=False)
            self._conn.row_factory = sqlite3.Row
        return list(self._conn.execute(sql, args).fetchall())

    async def _run(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._q, sql, *args)

    async def running_for(self, worker_id: str) -> list[tuple[str, float, int, str]]:
        rows = await self._run("SELECT id, progress, attempts, params FROM jobs "
                               "WHERE status = 'running' AND worker_id = ?", worker_id)  # fmt: skip
        return [(r[0], float(r[1]), int(r[2]), json.loads(r[3]).get("prompt", "")) for r in rows]

    async def queued(self) -> int:
        return int((await self._run("SELECT count(*) FROM jobs WHERE status = 'queued'"))[0][0])

    async def queued_attempts(self) -> int:
        rows = await self._run("SELECT max(attempts) FROM jobs WHERE status = 'queued' "
                               "AND params NOT LIKE ?", f"%{POISON}%")  # fmt: skip
        return int(rows[0][0] or 0)

    async def finished_after(self, epoch: float) -> int:
        rows = await self._run("SELECT count(*) FROM jobs WHERE finished_at > ?", epoch)
        return int(rows[0][0])

    async def dump(self) -> dict[str, list[dict[str, Any]]]:
        jobs = await self._run(f"SELECT {_JOB_COLUMNS}, created_at AS created, "
                               "finished_at AS finished FROM jobs")  # fmt: skip
        arts = await self._run("SELECT job_id, name, kind, image_index FROM artifacts")
        dels = await self._run("SELECT job_id, delivered_at AS delivered, ref FROM deliveries")
        return {"jobs": [dict(r) for r in jobs], "artifacts": [dict(r) for r in arts],
                "deliveries": [dict(r) for r in dels]}  # fmt: skip

    async def close(self) -> None:
        def close() -> None:
            if self._conn is not None:
                self._conn.close()

        await asyncio.get_running_loop().run_in_executor(self._pool, close)
        self._pool.shutdown()


class PostgresDb(Db):
    """Connects as the admin user, so terminating the gouache role's backends spares it."""

    def __init__(self, admin_url: str, role: str) -> None:
        self._url, self._role = admin_url, role
        self._conn: Any = None

    async def _q(self, sql: str, *args: Any) -> list[Any]:
        import asyncpg

        for attempt in range(40):
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await asyncpg.connect(self._url, timeout=5)
                return list(await self._conn.fetch(sql, *args))
            except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                    asyncpg.exceptions.OperatorInterventionError, TimeoutError):  # fmt: skip
                self._conn = None
                await asyncio.sleep(min(0.1 * (attempt + 1), 1.0))
        raise ChaosError("the harness lost PostgreSQL for good")

    async def running_for(self, worker_id: str) -> list[tuple[str, float, int, str]]:
        rows = await self._q("SELECT id, progress, attempts, params::text AS params FROM jobs "
                             "WHERE status = 'running' AND worker_id = $1", worker_id)  # fmt: skip
        return [(r[0], float(r[1]), int(r[2]), json.loads(r[3]).get("prompt", "")) for r in rows]

    async def queued(self) -> int:
        return int((await self._q("SELECT count(*) FROM jobs WHERE status = 'queued'"))[0][0])

    async def queued_attempts(self) -> int:
        rows = await self._q("SELECT max(attempts) FROM jobs WHERE status = 'queued' "
                             "AND params::text NOT LIKE $1", f"%{POISON}%")  # fmt: skip
        return int(rows[0][0] or 0)

    async def finished_after(self, epoch: float) -> int:
        rows = await self._q("SELECT count(*) FROM jobs WHERE finished_at > to_timestamp($1)", epoch)
        return int(rows[0][0])

    async def terminate_backends(self) -> int:
        rows = await self._q(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND usename = $1 AND pid <> pg_backend_pid()",
            self._role,
        )
        return int(rows[0][0])

    async def dump(self) -> dict[str, list[dict[str, Any]]]:
        jobs = await self._q(
            f"SELECT {_JOB_COLUMNS.replace('params', 'params::text AS params')}, "
            "extract(epoch FROM created_at)::float8 AS created, "
            "extract(epoch FROM finished_at)::float8 AS finished FROM jobs"
        )
        arts = await self._q("SELECT job_id, name, kind, image_index FROM artifacts")
        dels = await self._q("SELECT job_id, extract(epoch FROM delivered_at)::float8 AS delivered, "
                             "ref FROM deliveries")  # fmt: skip
        return {"jobs": [dict(r) for r in jobs], "artifacts": [dict(r) for r in arts],
                "deliveries": [dict(r) for r in dels]}  # fmt: skip

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._conn.close(), 5)


@contextlib.asynccontextmanager
async def pg_database():
    """A throwaway role with a password and a database it owns; both dropped afterwards."""
    import asyncpg

    admin, admin_url = None, ""
    for url in PG_ADMINS:
        with contextlib.suppress(Exception):
            admin = await asyncpg.connect(url, timeout=5)
            admin_url = url
            break
    if admin is None:
        raise ChaosError(f"no PostgreSQL on {PG_HOST}")
    suffix = uuid.uuid4().hex[:8]
    role, name, password = f"gouache_chaos_{suffix}", f"gouache_chaos_{suffix}", secrets.token_hex(12)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        await admin.execute(f'CREATE DATABASE "{name}" OWNER {role}')
    finally:
        await admin.close()
    base = admin_url.rsplit("/", 1)[0]
    url = f"postgresql://{role}:{password}@{PG_HOST}/{name}"
    try:
        yield url, f"{base}/{name}", role, password
    finally:
        await ensure_pg_up()
        for _ in range(10):
            try:
                admin = await asyncpg.connect(admin_url, timeout=5)
                try:
                    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    await admin.execute(f"DROP ROLE IF EXISTS {role}")
                finally:
                    await admin.close()
                break
            except Exception:
                await asyncio.sleep(1)


def _pg_cluster() -> tuple[str, str] | None:
    """(version, cluster) of the local server, from ``pg_lsclusters``; None if unknown."""
    with contextlib.suppress(Exception):
        out = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True,
                             timeout=10).stdout  # fmt: skip
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[2] == PG_HOST.rsplit(":", 1)[-1]:
                return parts[0], parts[1]
    return None


async def ensure_pg_up() -> None:
    """Whatever happened, leave the shared server running."""
    cluster = _pg_cluster()
    if cluster is None:
        return
    out = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True,
                         timeout=10).stdout  # fmt: skip
    if any(line.split()[:2] == list(cluster) and "online" in line for line in out.splitlines()):
        return
    await asyncio.to_thread(subprocess.run, ["pg_ctlcluster", *cluster, "start"], timeout=60)


# --- the run ------------------------------------------------------------------------------------
@dataclass
class Submission:
    n: int
    surface: str  # web | slack-command | slack-mention
    user: str
    text: str  # the command line (web, slash command text without the command)
    tag: str
    poison: bool = False
    slack_retry: bool = False
    sent_at: float = 0.0  # wall clock of the first try
    acked_at: float | None = None
    ack_seconds: float | None = None
    tries: int = 0
    failed_tries: int = 0  # connection refused or reset: the service was down
    request_ids: list[str] = field(default_factory=list)  # every id that may have reached us
    acked_request_id: str | None = None
    job_id: str | None = None
    refused: str | None = None
    slack_retries_sent: int = 0
    response_urls: list[str] = field(default_factory=list)


@dataclass
class Kill:
    at: float
    worker: str
    aimed: str
    phase: str
    held_jobs: int


@dataclass
class Run:
    config: Config
    backend: str
    workdir: Path
    rng: random.Random
    db: Db = field(init=False)
    url: str = ""
    db_password: str = ""
    port: int = 0
    web_token: str = field(default_factory=lambda: "webtok-" + secrets.token_hex(12))
    # Each simulated web user is a named person ([web.users]) with a token of their own, as a
    # team would set it up: anonymous browsers share one group's limits by design.
    web_user_tokens: dict[str, str] = field(default_factory=dict)
    bot_token: str = field(default_factory=lambda: "xoxb-chaos-" + secrets.token_hex(10))
    signing_secret: str = field(default_factory=lambda: "sign-" + secrets.token_hex(16))
    fake: FakeSlack | None = None
    service: Proc | None = None
    service_generation: int = 0
    submissions: list[Submission] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    poison_exits: int = 0
    other_worker_exits: list[int] = field(default_factory=list)
    worker_starts: int = 0
    pg_terminated: list[int] = field(default_factory=list)
    pg_restarts: list[dict[str, float | None]] = field(default_factory=list)
    service_restarts: list[dict[str, float]] = field(default_factory=list)
    recoveries: list[asyncio.Task[None]] = field(default_factory=list)
    load_done: bool = False
    ready_workers: int = 0
    pause_kills: bool = False  # around the PostgreSQL restart, so recovery is measured alone
    stop_faults: bool = False
    t0: float = 0.0
    logs: list[Path] = field(default_factory=list)

    # --- environment ----------------------------------------------------------------------
    def base_env(self) -> dict[str, str]:
        c = self.config
        keep = {k: v for k, v in os.environ.items() if not k.startswith("GOUACHE_")}
        return {
            **keep,
            "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "GOUACHE_DATABASE_URL": self.url,  # in the environment: the password stays off argv
            "GOUACHE_LOG_LEVEL": "DEBUG",
            "GOUACHE_WORKER__ENGINE": "tests.support.engines:PoisonableEngine",
            "GOUACHE_TEST_INNER_ENGINE": c.inner_engine,
            "GOUACHE_TEST_BATCH_A": str(c.timed_batch[0]),
            "GOUACHE_TEST_BATCH_B": str(c.timed_batch[1]),
            "GOUACHE_WORKER__DEVICE": "cpu",
            "GOUACHE_WORKER__LEASE_SECONDS": str(c.lease_seconds),
            "GOUACHE_WORKER__HEARTBEAT_SECONDS": str(c.heartbeat_seconds),
            "GOUACHE_WORKER__POLL_SECONDS": "0.2",
            "GOUACHE_WORKER__PROGRESS_INTERVAL_SECONDS": "0.1",
            "GOUACHE_WORKER__MAX_ATTEMPTS": str(c.max_attempts),
            "GOUACHE_BATCHING__MAX_BATCH_IMAGES": str(c.max_batch_images),
            "GOUACHE_BATCHING__BATCH_WINDOW_MS": str(c.batch_window_ms),
        }  # fmt: skip

    def service_env(self) -> dict[str, str]:
        assert self.fake is not None
        return {
            **self.base_env(),
            "GOUACHE_SLACK__BOT_TOKEN": self.bot_token,
            "GOUACHE_SLACK__SIGNING_SECRET": self.signing_secret,
            "GOUACHE_SLACK__API_BASE": self.fake.api_base,
            "GOUACHE_WEB__TOKEN": self.web_token,
            "GOUACHE_WEB__USERS": json.dumps(self.user_tokens()),
            "GOUACHE_ADMISSION__RATE_PER_MINUTE": "600",
            "GOUACHE_ADMISSION__BURST": "100",
            "GOUACHE_ADMISSION__MAX_PENDING_PER_USER": "100",
            "GOUACHE_ADMISSION__MAX_QUEUE": "5000",
        }

    def user_tokens(self) -> dict[str, str]:
        """A token for every web user the run can make (and the poison pill's sender)."""
        if not self.web_user_tokens:
            names = [f"web-chaos-u{i:03d}" for i in range(self.config.users)] + ["web-chaos-poison"]
            self.web_user_tokens = {name: "usertok-" + secrets.token_hex(12) for name in names}
        return self.web_user_tokens

    def secrets(self) -> dict[str, str]:
        found = {"slack bot token": self.bot_token, "slack signing secret": self.signing_secret,
                 "web token": self.web_token}  # fmt: skip
        found |= {f"web token of {name}": token for name, token in self.user_tokens().items()}
        if self.db_password:
            found["database password"] = self.db_password
        for sub in self.submissions:
            for i, url in enumerate(sub.response_urls):
                found[f"response_url of #{sub.n}.{i}"] = url
        return found

    def now(self) -> float:
        return time.monotonic() - self.t0

    # --- processes ------------------------------------------------------------------------
    async def start_service(self) -> None:
        self.service_generation += 1
        log = self.workdir / f"service-{self.service_generation}.log"
        self.logs.append(log)
        argv = [sys.executable, "-m", "gouache", "run", "--no-worker", "--port", str(self.port),
                "--data-dir", str(self.workdir / "data")]  # fmt: skip
        self.service = await Proc(f"service-{self.service_generation}", argv, self.service_env(), log).start()
        await self.service.wait_log(r"\bready\b", timeout=120)

    def worker_proc(self, name: str) -> Proc:
        log = self.workdir / f"{name}.log"
        self.logs.append(log)
        argv = [sys.executable, "-m", "gouache", "worker", "--worker-id", name,
                "--data-dir", str(self.workdir / "data")]  # fmt: skip
        return Proc(name, argv, self.base_env(), log)


async def _phase(run: Run, worker_id: str) -> tuple[str, int, int]:
    """What the worker is doing, as far as the database shows: (phase, jobs held, max attempts)."""
    held = await run.db.running_for(worker_id)
    if not held:  # what it may claim next counts: it could be holding it by the time we kill
        if not await run.db.queued():
            return "idle", 0, 0
        return "claiming", 0, await run.db.queued_attempts()
    attempts = max((a for _, _, a, prompt in held if POISON not in prompt), default=0)
    progress = [p for _, p, _, _ in held]
    # Step mode stores each job as its lanes retire while the others go on stepping: one held
    # job with every step done is being decoded or stored, whatever its batch-mates are at.
    if max(progress) >= 0.999:
        return "decode/store", len(held), attempts
    return ("mid-step" if max(progress) > 0 else "claimed"), len(held), attempts


async def _aim(run: Run, proc: Proc, worker_id: str, aimed: str, patience: float) -> tuple[str, int] | None:
    """Wait until ``worker_id`` is in phase ``aimed`` (else take what comes after ``patience``)."""
    c = run.config
    safe_attempts = max(1, c.max_attempts - 3)  # a job on its last tries is not killed again
    deadline = time.monotonic() + patience
    while proc.alive and not run.stop_faults and not run.pause_kills:
        phase, held, attempts = await _phase(run, worker_id)
        late = time.monotonic() > deadline
        if attempts <= safe_attempts and (phase == aimed or (late and phase != "idle")):
            return phase, held
        if time.monotonic() > deadline + 30:
            return None
        await asyncio.sleep(0.01)
    return None


async def worker_slot(run: Run, slot: int) -> None:
    """Keep one worker running; kill it at aimed moments until enough kills were made."""
    c, rng = run.config, run.rng
    generation = 0
    phases = ["claiming", "mid-step", "mid-step", "decode/store"]
    while True:
        name = f"chaos-w{slot}-{generation}"
        generation += 1
        proc = await run.worker_proc(name).start()
        run.worker_starts += 1
        try:
            await proc.wait_log(r"worker \S+ ready", timeout=180)
        except ChaosError:
            if proc.returncode == EXIT_POISONED:
                run.poison_exits += 1
                continue
            raise
        if generation == 1:
            run.ready_workers += 1
        while proc.alive:
            if run.stop_faults or (len(run.kills) >= c.worker_kills and run.load_done):
                await _park(run, proc)
                return
            await asyncio.sleep(rng.uniform(*c.kill_wait))
            while run.pause_kills and proc.alive and not run.stop_faults:
                await asyncio.sleep(0.2)
            aimed = rng.choice(phases)
            target = await _aim(run, proc, name, aimed, patience=6.0)
            if target is None or not proc.alive:
                continue
            proc.kill()
            run.kills.append(Kill(round(run.now(), 2), name, aimed, target[0], target[1]))
            break
        code = await proc.wait()
        if code == EXIT_POISONED:
            run.poison_exits += 1
        elif code != -signal.SIGKILL:
            run.other_worker_exits.append(code if code is not None else -1)
        await asyncio.sleep(rng.uniform(0.0, 0.5))


async def _park(run: Run, proc: Proc) -> None:
    """Faults are over: this worker drains the queue until the run ends (or a poison exits it)."""
    while not run.stop_faults:
        if not proc.alive:
            code = await proc.wait()
            if code == EXIT_POISONED:
                run.poison_exits += 1
            proc = await run.worker_proc(f"{proc.name}-again{run.worker_starts}").start()
            run.worker_starts += 1
        await asyncio.sleep(0.2)


async def service_faults(run: Run, at: list[float]) -> None:
    for moment in at:
        while run.now() < moment and not run.stop_faults:
            await asyncio.sleep(0.05)
        if run.stop_faults or run.service is None:
            return
        down = run.now()
        run.service.kill()
        await run.service.wait()
        await asyncio.sleep(run.rng.uniform(0.2, 1.0))
        await run.start_service()
        run.service_restarts.append({"at": round(down, 2), "down_seconds": round(run.now() - down, 2)})


async def pg_faults(run: Run, terminate_at: list[float], restart_at: float | None) -> None:
    assert isinstance(run.db, PostgresDb)
    tasks = [asyncio.create_task(_pg_terminations(run, terminate_at))]
    if restart_at is not None:
        tasks.append(asyncio.create_task(_pg_restart(run, restart_at)))
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()


async def _pg_terminations(run: Run, terminate_at: list[float]) -> None:
    assert isinstance(run.db, PostgresDb)
    for moment in terminate_at:
        while run.now() < moment and not run.stop_faults:
            await asyncio.sleep(0.05)
        if run.stop_faults:
            return
        run.pg_terminated.append(await run.db.terminate_backends())


async def _pg_restart(run: Run, restart_at: float) -> None:
    """No worker kills from QUIET_BEFORE_RESTART until recovery is measured, and the poison job
    done crashing workers (that, at the restart, would time a worker's start, not recovery)."""
    while run.now() < restart_at - QUIET_BEFORE_RESTART and not run.stop_faults:
        await asyncio.sleep(0.05)
    run.pause_kills = True
    poison_done_at = None
    while not run.stop_faults and run.now() < restart_at + 240:
        if poison_done_at is None and run.poison_exits >= run.config.max_attempts:
            poison_done_at = run.now()
        if run.now() >= restart_at and poison_done_at is not None and run.now() >= poison_done_at + 35:
            break
        await asyncio.sleep(0.05)
    if run.stop_faults:
        return
    cluster = _pg_cluster()
    if cluster is None:
        run.pg_restarts.append({"at": round(run.now(), 2), "error": -1})
        run.pause_kills = False
        return
    began = run.now()
    await asyncio.to_thread(subprocess.run, ["pg_ctlcluster", "-m", "fast", *cluster, "restart"],
                            timeout=120, capture_output=True)  # fmt: skip
    up, wall_up = run.now(), time.time()
    record: dict[str, float | None] = {"at": round(began, 2), "server_down_seconds": round(up - began, 2)}
    run.pg_restarts.append(record)
    await _measure_recovery(run, record, began, wall_up)


async def _measure_recovery(run: Run, record: dict[str, float | None], began: float, wall_up: float) -> None:
    """Seconds from the restart's start until, with the server back, a submission was
    acknowledged (admission writes to the database) and a job finished (a worker stored it)."""
    ack = done = None
    while run.now() - began < 120 and (ack is None or done is None):
        if ack is None and any(s.acked_at is not None and s.acked_at > wall_up for s in run.submissions):
            ack = run.now() - began
        if done is None and await run.db.finished_after(wall_up):
            done = run.now() - began
        await asyncio.sleep(0.05)
    record["first_ack_seconds"] = None if ack is None else round(ack, 2)
    record["first_job_finished_seconds"] = None if done is None else round(done, 2)
    both = [v for v in (ack, done) if v is not None]
    record["recovery_seconds"] = round(max(both), 2) if len(both) == 2 else None
    run.pause_kills = False


# --- clients ------------------------------------------------------------------------------------
async def submit(run: Run, session: aiohttp.ClientSession, sender: SlackSender, sub: Submission) -> None:
    sub.sent_at = time.time()
    give_up = time.monotonic() + 150
    if sub.surface == "web":
        await _submit_web(run, session, sub, give_up)
    elif sub.surface == "slack-command":
        await _submit_command(run, sender, sub, give_up)
    else:
        await _submit_mention(run, sender, sub, give_up)


_DOWN = (aiohttp.ClientError, OSError, TimeoutError)


async def _submit_web(run: Run, session: aiohttp.ClientSession, sub: Submission, give_up: float) -> None:
    headers = {"Authorization": f"Bearer {run.user_tokens()[sub.user]}",
               "Idempotency-Key": f"chaos-{sub.n}"}  # fmt: skip
    sub.request_ids.append(f"chaos-{sub.n}")  # the server binds it to the user and endpoint
    while time.monotonic() < give_up:
        sub.tries += 1
        started = time.perf_counter()
        try:
            async with session.post(f"http://127.0.0.1:{run.port}/api/jobs", headers=headers,
                                    json={"command": sub.text},
                                    timeout=aiohttp.ClientTimeout(total=15)) as resp:  # fmt: skip
                status, body = resp.status, await resp.json(content_type=None)
        except _DOWN:
            sub.failed_tries += 1
            await asyncio.sleep(0.5)
            continue
        if status in (200, 202):
            sub.ack_seconds, sub.acked_at = time.perf_counter() - started, time.time()
            sub.job_id, sub.acked_request_id = body["id"], sub.request_ids[0]
            return
        if status >= 500:
            sub.failed_tries += 1
            await asyncio.sleep(0.5)
            continue
        sub.refused = f"{status} {body}"
        return
    sub.refused = "gave up"


async def _submit_command(run: Run, sender: SlackSender, sub: Submission, give_up: float) -> None:
    urls = sub.response_urls
    while time.monotonic() < give_up:
        sub.tries += 1
        trigger = f"{sub.n}.{sub.tries}.chaos{secrets.token_hex(3)}"
        sub.request_ids.append(trigger)
        started = time.perf_counter()
        try:
            form = await sender.command("/imagine", sub.text, user=sub.user, channel="C0CHAOS",
                                        trigger_id=trigger)  # fmt: skip
        except _DOWN:  # Slack shows the user an error; the user types the command again
            sub.failed_tries += 1
            await asyncio.sleep(1.0)
            continue
        urls.append(form["response_url"])
        if form["status"] == 200:
            sub.ack_seconds, sub.acked_at = time.perf_counter() - started, time.time()
            sub.acked_request_id = trigger
            if sub.slack_retry:  # Slack did not see the ack in time: the same request again
                for retry in (1, 2):
                    await asyncio.sleep(run.rng.uniform(0.05, 0.5))
                    with contextlib.suppress(*_DOWN):
                        await sender.command("/imagine", sub.text, user=sub.user, channel="C0CHAOS",
                                             trigger_id=trigger, retry_num=retry)  # fmt: skip
                        sub.slack_retries_sent += 1
            return
        sub.failed_tries += 1
        await asyncio.sleep(1.0)
    sub.refused = "gave up"


async def _submit_mention(run: Run, sender: SlackSender, sub: Submission, give_up: float) -> None:
    event_id = f"Ev{sub.n:06d}chaos{secrets.token_hex(3)}"
    sub.request_ids.append(event_id)
    text = f"<@UBOT> {sub.text}"
    retry: int | None = None
    while time.monotonic() < give_up:
        sub.tries += 1
        started = time.perf_counter()
        try:
            env = await sender.mention(text, user=sub.user, channel="C0CHAOS", event_id=event_id,
                                       retry_num=retry)  # fmt: skip
        except _DOWN:  # Slack retries the event: same id, X-Slack-Retry-Num counting up
            sub.failed_tries += 1
            retry = (retry or 0) + 1
            await asyncio.sleep(1.0)
            continue
        if env["status"] == 200:
            sub.ack_seconds, sub.acked_at = time.perf_counter() - started, time.time()
            sub.acked_request_id = event_id
            if sub.slack_retry:
                for extra in (1, 2):
                    await asyncio.sleep(run.rng.uniform(0.05, 0.5))
                    with contextlib.suppress(*_DOWN):
                        await sender.mention(text, user=sub.user, channel="C0CHAOS",
                                             event_id=event_id, retry_num=(retry or 0) + extra)  # fmt: skip
                        sub.slack_retries_sent += 1
            return
        sub.failed_tries += 1
        retry = (retry or 0) + 1
        await asyncio.sleep(1.0)
    sub.refused = "gave up"


class Planner:
    """Submissions: user ``i`` of ``users`` is on Slack for the last ``slack_share`` of them."""

    def __init__(self, c: Config, rng: random.Random) -> None:
        self.c, self.rng, self.n = c, rng, 0

    def burst(self) -> list[Submission]:
        return [self.make(i) for i in range(self.c.users)]

    def next(self) -> Submission:
        return self.make(self.rng.randrange(self.c.users))

    def make(self, user_index: int) -> Submission:
        c, rng, n = self.c, self.rng, self.n
        self.n += 1
        slack = user_index >= c.users - round(c.users * c.slack_share)
        surface = "web" if not slack else rng.choice(["slack-command", "slack-mention"])
        tag = f"tag-c{n:05d}"
        steps = rng.choice(c.steps)
        extra = " --n 2" if rng.random() < c.two_image_share else ""
        words = rng.choice(["a red circle", "a blue square", "a green triangle", "two yellow stars"])
        body = f"{tag} {words} --steps {steps} --seed {rng.randrange(10_000)}{extra}"
        text = body if surface == "slack-command" else (
            f"imagine {body}" if surface == "slack-mention" else f"/imagine {body}")  # fmt: skip
        user = f"web-chaos-u{user_index:03d}" if not slack else f"UCHAOS{user_index:03d}"
        return Submission(n, surface, user, text, tag, slack_retry=slack and rng.random() < c.slack_retry_share)


async def load(run: Run, planner: Planner) -> None:
    """The burst, the stream, and more of the stream while the kills are short of the target."""
    c, rng = run.config, run.rng
    assert run.fake is not None
    sender = SlackSender(f"http://127.0.0.1:{run.port}{SLACK_PATH}", run.signing_secret, run.fake)
    connector = aiohttp.TCPConnector(limit=200, force_close=True)
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as session:
        tasks: list[asyncio.Task[None]] = []

        def launch(sub: Submission) -> None:
            run.submissions.append(sub)
            tasks.append(asyncio.create_task(submit(run, session, sender, sub)))

        for sub in planner.burst():  # all at once
            launch(sub)
        poison_at = max(1, c.stream_jobs // 20)
        k = 0
        # Kills are aimed at held work (and spare jobs on their last attempts), so a stream that
        # ran dry would leave the kill count short for good: it goes on until the kills are made
        # (the run's deadline bounds it).
        while k < c.stream_jobs or len(run.kills) < c.worker_kills:
            await asyncio.sleep(rng.expovariate(c.stream_rate))
            if k == poison_at:
                poison = Submission(99_999, "web", "web-chaos-poison",
                                    f"/imagine tag-p00000 {POISON} --steps 4", "tag-p00000",
                                    poison=True)  # fmt: skip
                launch(poison)
            launch(planner.next())
            k += 1
        await asyncio.gather(*tasks)
    run.load_done = True


# --- the verdict --------------------------------------------------------------------------------
def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def slack_posts(fake: FakeSlack) -> tuple[Counter[str], Counter[str]]:
    """Per tag: result messages (Done or an error) and completed file uploads."""
    finals: Counter[str] = Counter()
    uploads: Counter[str] = Counter()
    for call in fake.calls:
        if call.status != 200:
            continue
        if call.method in ("chat.postMessage", "chat.update"):
            text = str(call.args.get("text", ""))
            found = TAG.search(text)
            if found and not text.startswith("Generating"):
                finals[found.group(0)] += 1
        elif call.method == "files.completeUploadExternal":
            found = TAG.search(str(call.args.get("initial_comment", "")))
            if found:
                uploads[found.group(0)] += 1
    return finals, uploads


def scan_logs(paths: list[Path], found_secrets: dict[str, str]) -> list[str]:
    hits = []
    for path in paths:
        if not path.exists():
            continue
        for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for what, value in found_secrets.items():
                if value and value in line:
                    hits.append(f"{path.name}:{lineno}: {what}")
    return hits


async def verdict(run: Run) -> dict[str, Any]:
    c = run.config
    data = await run.db.dump()
    jobs = {j["id"]: j for j in data["jobs"]}
    # A web job's request id is "<user>:<endpoint>:<Idempotency-Key>": matched by the key.
    by_request = {(j["platform"], j["request_id"].rsplit(":", 1)[-1] if j["platform"] == "web"
                   else j["request_id"]): j for j in data["jobs"]}  # fmt: skip
    images: dict[str, list[int | None]] = {}
    for art in data["artifacts"]:
        if art["kind"] == "image":
            images.setdefault(art["job_id"], []).append(art["image_index"])
    delivered = {d["job_id"]: d for d in data["deliveries"]}
    assert run.fake is not None
    finals, uploads = slack_posts(run.fake)

    problems: list[str] = []
    lost = duplicates_posts = duplicate_artifacts = missing_posts = 0
    accepted: list[tuple[Submission, dict[str, Any]]] = []
    for sub in run.submissions:
        platform_name = "web" if sub.surface == "web" else "slack"
        rows = [by_request[(platform_name, r)] for r in sub.request_ids if (platform_name, r) in by_request]
        if sub.acked_request_id is not None and (platform_name, sub.acked_request_id) not in by_request:
            lost += 1
            problems.append(f"#{sub.n} {sub.surface}: acknowledged as {sub.acked_request_id}, no job")
        for row in rows:
            accepted.append((sub, row))
    accepted_ids = {row["id"] for _, row in accepted}
    phantom = [j for j in jobs if j not in accepted_ids]
    if phantom:
        problems.append(f"{len(phantom)} jobs nobody asked for: {phantom[:3]}")

    rows_of: dict[int, list[dict[str, Any]]] = {}
    for sub, row in accepted:
        rows_of.setdefault(sub.n, []).append(row)
    for sub in run.submissions:
        rows = rows_of.get(sub.n, [])
        if sub.surface == "web" or not rows:
            continue
        want_final, want_up = len(rows), sum(r["status"] == "succeeded" for r in rows)
        n_final, n_up = finals[sub.tag], uploads[sub.tag]
        if n_final > want_final or n_up > want_up:
            duplicates_posts += max(0, n_final - want_final) + max(0, n_up - want_up)
            problems.append(f"#{sub.n} {sub.tag}: {n_final} result posts and {n_up} uploads for {want_final} jobs")
        elif n_final < want_final or n_up < want_up:
            missing_posts += 1
            problems.append(f"#{sub.n} {sub.tag}: {n_final} result posts and {n_up} uploads for {want_final} jobs")

    poison_ok = False
    for sub, row in accepted:
        job_id, status = row["id"], row["status"]
        if sub.poison:
            poison_ok = status == "dead" and row["attempts"] == c.max_attempts
            if not poison_ok:
                problems.append(f"poison job is {status} after {row['attempts']} attempts")
        elif status != "succeeded":
            lost += 1
            problems.append(f"#{sub.n} job {job_id} is {status} after {row['attempts']} attempts: {row['error']}")
        got = images.get(job_id, [])
        want = list(range(row["images"])) if status == "succeeded" else []
        if sorted(i for i in got if i is not None) != want or len(got) != len(want):
            extra = max(0, len(got) - len(want))
            duplicate_artifacts += extra
            if status == "succeeded":
                problems.append(f"job {job_id} has images {sorted(map(str, got))}, wants {want}")
        if row["status"] in ("succeeded", "failed", "dead", "cancelled") and job_id not in delivered:
            problems.append(f"job {job_id} ({status}) has no delivery receipt")
    stuck = [j["id"] for j in jobs.values() if j["status"] in ("queued", "running")]
    if stuck:
        problems.append(f"{len(stuck)} jobs stuck queued/running")
    refused = [s for s in run.submissions if s.refused is not None]
    for s in refused:
        problems.append(f"#{s.n} {s.surface} refused: {s.refused}")
    secret_hits = scan_logs(run.logs, run.secrets())
    problems += secret_hits[:20]

    acks = [s.ack_seconds for s in run.submissions if s.ack_seconds is not None]
    to_delivery = [delivered[row["id"]]["delivered"] - sub.sent_at for sub, row in accepted
                   if row["id"] in delivered and not sub.poison]  # fmt: skip
    phases = Counter(k.phase for k in run.kills)
    restarts_ok = all((r.get("recovery_seconds") or 1e9) <= RECOVERY_TARGET_S for r in run.pg_restarts)
    figures = {
        "backend": run.backend,
        "jobs": len(accepted),
        "images": sum(row["images"] for _, row in accepted),
        "submissions": len(run.submissions),
        "slack_requests": sum(s.surface != "web" for s in run.submissions),
        "slack_retries_sent": sum(s.slack_retries_sent for s in run.submissions),
        "tries_refused_while_service_down": sum(s.failed_tries for s in run.submissions),
        "worker_kills": len(run.kills),
        "kills_by_phase": dict(sorted(phases.items())),
        "poison_worker_exits": run.poison_exits,
        "worker_starts": run.worker_starts,
        "pg_terminate_rounds": len(run.pg_terminated),
        "pg_backends_terminated": sum(run.pg_terminated),
        "pg_restarts": run.pg_restarts,
        "service_restarts": run.service_restarts,
        "jobs_lost": lost,
        "duplicate_posts": duplicates_posts,
        "missing_posts": missing_posts,
        "duplicate_artifacts": duplicate_artifacts,
        "stuck_jobs": len(stuck),
        "poison_dead_after_max_attempts": poison_ok,
        "max_attempts": c.max_attempts,
        "ack_p50_s": _pct(acks, 0.5),
        "ack_p99_s": _pct(acks, 0.99),
        "ack_max_s": round(max(acks), 3) if acks else None,
        "acks_over_3s": sum(a > ACK_TARGET_S for a in acks),
        "submit_to_delivery_p50_s": _pct(to_delivery, 0.5),
        "submit_to_delivery_p95_s": _pct(to_delivery, 0.95),
        "secrets_found": len(secret_hits),
        "log_lines_scanned": sum(len(p.read_text(errors="replace").splitlines()) for p in run.logs if p.exists()),
        "other_worker_exits": run.other_worker_exits,
        "seconds": round(run.now(), 1),
    }
    figures["invariants_held"] = not problems and poison_ok
    figures["targets_met"] = restarts_ok and figures["acks_over_3s"] == 0
    figures["passed"] = figures["invariants_held"] and figures["targets_met"]
    figures["problems"] = problems[:60]
    return figures


# --- one backend --------------------------------------------------------------------------------
async def run_backend(config: Config, backend: str, workdir: Path | None = None) -> dict[str, Any]:
    """One chaos run on ``backend``; returns its figures (``passed`` says whether it held)."""
    if backend == "sqlite":
        config = replace(config, pg_terminations=0, pg_restart=False)
    own_dir = workdir is None
    workdir = workdir or Path(tempfile.mkdtemp(prefix=f"gouache-chaos-{backend}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    run = Run(config, backend, workdir, random.Random(config.seed))
    try:
        async with contextlib.AsyncExitStack() as stack:
            if backend == "postgres":
                url, admin_url, role, password = await stack.enter_async_context(pg_database())
                run.url, run.db_password = url, password
                run.db = PostgresDb(admin_url, role)
            else:
                path = workdir / "data" / "gouache.db"
                path.parent.mkdir(parents=True, exist_ok=True)
                run.url = f"sqlite:///{path}"
                run.db = SqliteDb(path)
            stack.push_async_callback(run.db.close)
            stack.push_async_callback(Proc.kill_all)
            run.fake = await stack.enter_async_context(FakeSlack(bot_token=run.bot_token))
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                run.port = probe.getsockname()[1]
            return await asyncio.wait_for(_drive(run), config.deadline_seconds)
    except TimeoutError:
        return {"backend": backend, "passed": False, "problems": ["deadline passed"],
                "seconds": config.deadline_seconds, "workdir": str(workdir)}  # fmt: skip
    finally:
        await Proc.kill_all()
        if own_dir and os.environ.get("GOUACHE_CHAOS_KEEP") is None:
            shutil.rmtree(workdir, ignore_errors=True)


async def _drive(run: Run) -> dict[str, Any]:
    c = run.config
    run.t0 = time.monotonic()
    slots = [asyncio.create_task(worker_slot(run, i)) for i in range(c.workers)]
    await run.start_service()
    await _until(lambda: run.ready_workers >= c.workers or any(s.done() for s in slots), 180)
    planner = Planner(c, run.rng)
    span = c.stream_jobs / c.stream_rate  # how long the stream lasts
    begin = run.now()  # the faults' clock starts with the load
    faults: list[Awaitable[None]] = []
    restarts = [begin + span * (i + 1) / (c.service_restarts + 1) for i in range(c.service_restarts)]
    faults.append(service_faults(run, restarts))
    if run.backend == "postgres":
        terminate = [begin + span * (i + 0.5) / max(1, c.pg_terminations) for i in range(c.pg_terminations)]
        faults.append(pg_faults(run, terminate, begin + span * 0.45 if c.pg_restart else None))
    fault_tasks = [asyncio.create_task(f) for f in faults]
    if PROGRESS_EVERY:
        fault_tasks.append(asyncio.create_task(_report_progress(run, PROGRESS_EVERY)))
    try:
        await load(run, planner)
        await asyncio.gather(*fault_tasks[: len(faults)], *run.recoveries)
        await _until(lambda: len(run.kills) >= c.worker_kills or any(s.done() for s in slots),
                     c.deadline_seconds)  # fmt: skip
        for slot in slots:
            if slot.done() and slot.exception() is not None:
                raise slot.exception()  # type: ignore[misc]
        await _drain(run)
        run.stop_faults = True
        await asyncio.gather(*slots)
        await asyncio.sleep(1.0)  # a last delivery pass
        return await verdict(run)
    finally:
        run.stop_faults = True
        for task in [*slots, *fault_tasks]:
            task.cancel()
        await asyncio.gather(*slots, *fault_tasks, *run.recoveries, return_exceptions=True)
        if run.service is not None:
            await run.service.stop()


async def _report_progress(run: Run, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        with contextlib.suppress(Exception):
            counts = await run.db.counts()
            acked = sum(s.acked_at is not None for s in run.submissions)
            print(f"[chaos {run.backend} {run.now():6.1f}s] submitted {len(run.submissions)} acked {acked} "
                  f"kills {len(run.kills)} poison-exits {run.poison_exits} jobs {counts}",
                  file=sys.stderr, flush=True)  # fmt: skip


async def _until(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        await asyncio.sleep(0.2)


async def _drain(run: Run) -> None:
    """Wait until nothing is queued or running and every finished job is delivered."""
    while True:
        data = await run.db.dump()
        open_jobs = [j for j in data["jobs"] if j["status"] in ("queued", "running")]
        delivered = {d["job_id"] for d in data["deliveries"]}
        undelivered = [j for j in data["jobs"] if j["id"] not in delivered]
        if not open_jobs and not undelivered:
            return
        await asyncio.sleep(0.5)


# --- reporting ----------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    return "–" if value is None else str(value)


def readme_table(report: dict[str, Any]) -> str:
    rows = [("", *report["results"])]
    results = list(report["results"].values())

    def row(label: str, fn: Callable[[dict[str, Any]], Any]) -> None:
        rows.append((label, *(_fmt(fn(r)) for r in results)))

    row("jobs (images)", lambda r: f"{r['jobs']} ({r['images']})")
    row("worker SIGKILLs (claiming / mid-step / decode-store)", lambda r: "{} ({} / {} / {})".format(
        r["worker_kills"], r["kills_by_phase"].get("claiming", 0),
        r["kills_by_phase"].get("mid-step", 0) + r["kills_by_phase"].get("claimed", 0),
        r["kills_by_phase"].get("decode/store", 0)))  # fmt: skip
    row("poison job: worker exits, then dead", lambda r: f"{r['poison_worker_exits']}, "
        f"{'yes' if r['poison_dead_after_max_attempts'] else 'NO'} (max_attempts {r['max_attempts']})")  # fmt: skip
    row("PostgreSQL faults (terminate rounds / backends / restarts)",
        lambda r: f"{r['pg_terminate_rounds']} / {r['pg_backends_terminated']} / {len(r['pg_restarts'])}"
        if r["backend"] == "postgres" else "–")  # fmt: skip
    row("service SIGKILL + restart", lambda r: len(r["service_restarts"]))
    row("jobs lost", lambda r: r["jobs_lost"])
    row("duplicate posts / duplicate artifacts", lambda r: f"{r['duplicate_posts']} / {r['duplicate_artifacts']}")
    row("stuck queued/running", lambda r: r["stuck_jobs"])
    row("ack latency p99 (max), target 3 s", lambda r: f"{r['ack_p99_s']} s ({r['ack_max_s']} s)")
    row("submission to delivery p95", lambda r: f"{r['submit_to_delivery_p95_s']} s")
    row("recovery after the PostgreSQL restart, target 10 s",
        lambda r: ", ".join(f"{p.get('recovery_seconds')} s" for p in r["pg_restarts"]) or "–")  # fmt: skip
    row("secrets in DEBUG logs (lines scanned)", lambda r: f"{r['secrets_found']} ({r['log_lines_scanned']})")
    row("wall time", lambda r: f"{r['seconds']} s")
    row("invariants held", lambda r: "yes" if r.get("invariants_held", not r.get("problems")) else "NO")
    row("targets met (acks 3 s, recovery 10 s)", lambda r: "yes" if r.get("targets_met", r["passed"]) else "NO")
    lines = ["| " + " | ".join(rows[0]) + " |", "| " + " | ".join(["---"] * len(rows[0])) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def write_readme(report: dict[str, Any], path: Path = README) -> None:
    text = path.read_text()
    if README_BEGIN not in text:
        return
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    path.write_text(f"{head}{README_BEGIN}\n{readme_table(report)}\n{README_END}{tail}")


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="full")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--out", type=Path, default=None, help=f"default {RESULTS} (full run only)")
    parser.add_argument("--keep", type=Path, default=None, help="keep logs and the database here")
    parser.add_argument("--readme-only", action="store_true", help=f"rewrite the table in docs/benchmarks.md from {RESULTS.name}")
    args = parser.parse_args(argv)
    if args.readme_only:
        write_readme(json.loads(RESULTS.read_text()))
        return 0
    config = CONFIGS[args.config]
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    results: dict[str, Any] = {}
    try:
        for backend in backends:
            keep = args.keep / backend if args.keep else None
            results[backend] = await run_backend(config, backend, keep)
            printable = {k: v for k, v in results[backend].items() if k != "problems"}
            print(backend, json.dumps(printable), flush=True)
            for problem in results[backend].get("problems", []):
                print("  problem:", problem, flush=True)
    finally:
        await ensure_pg_up()
    report = {
        "config": {k: v for k, v in asdict(config).items()},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform()},  # fmt: skip
        "results": results,
    }
    out = args.out or (RESULTS if args.config == "full" else None)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists() and args.backend != "both":  # one backend re-run: keep the other's figures
            with contextlib.suppress(ValueError, KeyError):
                old = json.loads(out.read_text())["results"]
                report["results"] = {**old, **results}
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {out}")
        if args.config == "full":
            write_readme(report)
    return 0 if all(r.get("passed") for r in results.values()) else 1


if __name__ == "__main__":
    import atexit

    atexit.register(_kill_leftovers_sync)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    raise SystemExit(asyncio.run(main()))

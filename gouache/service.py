"""`gouache run`: the composition root of the all-in-one service.

Opens storage, builds admission (with the prompt blocklist in front), the adapters whose
credentials are configured, delivery, the web server and a supervised worker child process,
all on one ``AsyncExitStack``. SIGTERM closes admission first, lets the worker finish its
batch (or kills it after a grace period: its leases then expire and the jobs are re-queued),
delivers what finished, then stops the web server and closes storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from gouache.bot.adapter import Adapter
from gouache.bot.delivery import Delivery
from gouache.bot.moderation import ModeratedAdmission, PromptFilter
from gouache.bot.web_adapter import WebAdapter
from gouache.config import Settings
from gouache.observability import Metrics, setup_logging
from gouache.storage.base import Storage
from gouache.web.app import AppDeps, make_app
from gouache.web.health import Health
from gouache.web.metrics import QueueMetrics

__all__ = ["run_service", "serve", "WorkerSupervisor", "worker_environment", "AdapterDeps"]

log = logging.getLogger("gouache.service")

# Settings sections the worker never needs: their secrets stay out of its environment.
_NOT_FOR_WORKER = frozenset({"discord", "slack", "web", "admission", "host", "port"})


@dataclass(frozen=True)
class AdapterDeps:
    """What a chat adapter module's ``open_adapter(deps, stack)`` receives."""

    settings: Settings
    storage: Storage
    admission: Any  # has ``async admit(request) -> Admitted``


@dataclass(frozen=True)
class _ChatPlatform:
    """The seam for chat adapters: a module exposing ``async open_adapter(deps, stack)``."""

    name: str
    module: str
    configured: Callable[[Settings], bool]
    needs: str


_CHAT_PLATFORMS = (
    _ChatPlatform("Discord", "gouache.bot.discord_adapter",
                  lambda s: s.discord.token is not None, "GOUACHE_DISCORD__TOKEN"),
    _ChatPlatform("Slack", "gouache.bot.slack_adapter",
                  lambda s: s.slack.bot_token is not None and s.slack.signing_secret is not None,
                  "GOUACHE_SLACK__BOT_TOKEN and GOUACHE_SLACK__SIGNING_SECRET"),
)  # fmt: skip


async def run_service(settings: Settings) -> int:
    """Entry point of `gouache run` (the CLI runs it with ``asyncio.run``); the exit code."""
    setup_logging(settings.log_level, secrets=settings.secret_values(), json_lines=settings.log_json)
    if not settings.is_loopback and settings.web.token is None:
        log.error(
            "refusing to listen on %s without a token: set GOUACHE_WEB__TOKEN, or bind to "
            "127.0.0.1 (the default)", settings.host,
        )
        return 2
    try:
        PromptFilter(settings.moderation)
    except ValueError as exc:
        log.error("bad configuration: %s", exc)
        return 2
    return await serve(settings)


async def serve(settings: Settings, *, stop: asyncio.Event | None = None, spawn_worker: bool = True) -> int:
    """Run until ``stop`` is set (or SIGTERM/SIGINT arrives), then shut down in order."""
    from gouache.storage import open_storage

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    accepting = True
    async with AsyncExitStack() as stack:
        storage = await stack.enter_async_context(open_storage(settings.resolved_database_url))
        log.info("storage: %s", _describe_url(settings.resolved_database_url))
        _log_choices(settings)
        metrics = Metrics(CollectorRegistry())
        admission = ModeratedAdmission(
            PromptFilter(settings.moderation),
            _admission(storage, settings),
            on_refused=lambda exc: metrics.admission_refusals.labels(reason=type(exc).__name__).inc(),
        )
        web_adapter = WebAdapter(storage, admission, settings, on_admitted=lambda: delivery.wake())
        adapters: dict[str, Adapter] = {"web": web_adapter}
        extra_routes: list[web.RouteDef] = []
        deps = AdapterDeps(settings, storage, admission)
        for platform in _CHAT_PLATFORMS:
            adapter = await _open_chat_adapter(platform, deps, stack)
            if adapter is not None:
                adapters[adapter.platform] = adapter
                extra_routes += getattr(adapter, "routes", list)()
        delivery = Delivery(storage, adapters, flagged_action=settings.moderation.flagged_action)
        queue_metrics = QueueMetrics(storage, metrics)
        app = make_app(AppDeps(settings, web_adapter, Health(storage, settings), queue_metrics,
                               extra_routes, accepting=lambda: accepting))  # fmt: skip
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        try:
            await web.TCPSite(runner, settings.host, settings.port).start()
        except OSError as exc:
            log.error("cannot listen on %s:%s: %s", settings.host, settings.port, exc)
            return 1
        port = runner.addresses[0][1]
        log.info("web playground: http://%s:%d/ (%s)", _url_host(settings.host), port,
                 "loopback only" if settings.is_loopback else "token required")  # fmt: skip
        supervisor = WorkerSupervisor(settings)
        tasks = [asyncio.create_task(delivery.run(), name="delivery"),
                 asyncio.create_task(queue_metrics.run(), name="metrics")]  # fmt: skip
        if spawn_worker:
            tasks.append(asyncio.create_task(supervisor.run(), name="worker-supervisor"))
        else:
            log.info("worker: not started here (run `gouache worker` against the same database)")
        log.info("ready")
        await stop.wait()

        log.info("shutting down: admission closed, waiting for the worker's batch")
        accepting = False
        await supervisor.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await delivery.deliver_pending()
        log.info("stopped")
    return 0


def _log_choices(settings: Settings) -> None:
    spec = settings.models[settings.default_model]
    log.info("model: %s%s", settings.default_model, f" ({spec.label})" if spec.label else "")
    mod = settings.moderation
    if mod.blocked_words or mod.blocked_patterns:
        log.info("moderation: blocking %d words and %d patterns", len(mod.blocked_words),
                 len(mod.blocked_patterns))  # fmt: skip
    else:
        log.info("moderation: no blocklist (GOUACHE_MODERATION__BLOCKED_WORDS)")


def _admission(storage: Storage, settings: Settings) -> Any:
    from gouache.bot.admission import Admission

    return Admission(storage, settings)


async def _open_chat_adapter(platform: _ChatPlatform, deps: AdapterDeps, stack: AsyncExitStack) -> Adapter | None:
    if not platform.configured(deps.settings):
        log.info("%s: disabled, no %s", platform.name, platform.needs)
        return None
    try:
        module = importlib.import_module(platform.module)
    except ModuleNotFoundError as exc:
        log.error("%s: configured, but %s is not available (%s)", platform.name, platform.module, exc)
        return None
    adapter: Adapter = await module.open_adapter(deps, stack)
    log.info("%s: enabled", platform.name)
    return adapter


def _describe_url(url: str) -> str:
    return url.split("@")[-1] if "@" in url else url  # never log a password


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# --- the worker child ------------------------------------------------------------------------


def worker_environment(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment: ours, with every worker-relevant setting as ``GOUACHE_*``.

    pydantic-settings reads nested sections and lists as JSON, so the worker sees exactly
    the settings this process resolved (from flags, TOML or env), minus chat and web secrets.
    """
    env = dict(os.environ if base is None else base)
    for key in [k for k in env if k.startswith("GOUACHE_")]:
        section = key[len("GOUACHE_"):].split("__", 1)[0].lower()
        if section in _NOT_FOR_WORKER or section.removesuffix("_file") in _NOT_FOR_WORKER:
            del env[key]
    dumped = settings.model_dump(mode="json", exclude=set(_NOT_FOR_WORKER))
    for name, value in dumped.items():
        if value is None:
            continue
        env[f"GOUACHE_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    env["GOUACHE_DATABASE_URL"] = settings.resolved_database_url
    env.pop("GOUACHE_CONFIG", None)  # everything from it is in the variables above
    return env


def _die_with_parent() -> Callable[[], None] | None:
    """Linux: the child gets SIGTERM if this process dies, even by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    return lambda: libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class WorkerSupervisor:
    """Keeps one `gouache worker` child alive; restarts it with backoff when it exits."""

    def __init__(self, settings: Settings, *, grace_seconds: float | None = None) -> None:
        self._settings = settings
        self._grace = grace_seconds if grace_seconds is not None else min(
            max(10.0, settings.worker.lease_seconds), 120.0)  # fmt: skip
        self._process: asyncio.subprocess.Process | None = None
        self._stopping = False
        self.restarts = 0

    def argv(self) -> list[str]:
        """The child's command line; a URL carrying a password travels only in the env."""
        s = self._settings
        argv = [sys.executable, "-m", "gouache", "worker", "--data-dir", str(s.data_dir),
                "--model", s.default_model, "--log-level", s.log_level]  # fmt: skip
        if not any(v in s.resolved_database_url for v in s.secret_values()):
            argv += ["--database-url", s.resolved_database_url]
        return argv

    async def run(self) -> None:
        backoff = 1.0
        while not self._stopping:
            started = asyncio.get_running_loop().time()
            self._process = await asyncio.create_subprocess_exec(
                *self.argv(), env=worker_environment(self._settings), stdin=asyncio.subprocess.DEVNULL,
                preexec_fn=_die_with_parent(),
                start_new_session=True,  # Ctrl-C reaches only us; we decide when it stops
            )  # fmt: skip
            log.info("worker: started child process %d", self._process.pid)
            code = await self._process.wait()
            if self._stopping:
                return
            ran = asyncio.get_running_loop().time() - started
            backoff = 1.0 if ran > 60 else min(backoff * 2, 60.0)
            self.restarts += 1
            log.error("worker: child exited with code %s after %.0f s; restarting in %.0f s",
                      code, ran, backoff)  # fmt: skip
            await asyncio.sleep(backoff)

    async def stop(self) -> int | None:
        """SIGTERM, wait for the batch to finish, SIGKILL after the grace period."""
        self._stopping = True
        process = self._process
        if process is None or process.returncode is not None:
            return None if process is None else process.returncode
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            code = await asyncio.wait_for(process.wait(), self._grace)
        except TimeoutError:
            log.warning("worker: still busy after %.0f s; killing it (its jobs will be re-queued)",
                        self._grace)  # fmt: skip
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            code = await process.wait()
        log.info("worker: stopped (exit code %s)", code)
        return code

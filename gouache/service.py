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
import importlib
import logging
import signal
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from gouache.bot.adapter import Adapter, AdapterDeps
from gouache.bot.adapters.web import WebAdapter
from gouache.bot.delivery import Delivery
from gouache.bot.generator import GeneratorWatch
from gouache.bot.links import ArtifactLinks, load_link_key
from gouache.bot.moderation import ModeratedAdmission, PromptFilter
from gouache.bot.prompt_length import prompt_length_checker
from gouache.config import Settings
from gouache.observability import Metrics, setup_logging
from gouache.startup import StartupError, prepare_run
from gouache.storage.base import Storage
from gouache.web.app import AppDeps, make_app, runner_options
from gouache.web.health import Health
from gouache.web.metrics import QueueMetrics
from gouache.worker.supervisor import WorkerSupervisor

__all__ = ["run_service", "serve"]

log = logging.getLogger("gouache.service")


@dataclass(frozen=True)
class _ChatPlatform:
    """The seam for chat adapters: a module exposing ``async open_adapter(deps, stack)``."""

    name: str
    module: str
    configured: Callable[[Settings], bool]
    needs: str
    describe: Callable[[Settings], str] = lambda s: ""  # how it connects, and why


def _slack_mode(settings: Settings) -> str:
    """The startup line that says which way Slack reaches this process, and why."""
    if settings.slack.mode == "socket":
        return (" in Socket Mode (GOUACHE_SLACK__APP_TOKEN is set: the bot dials out, no public "
                "URL or signing secret needed)")  # fmt: skip
    return (" in HTTP mode at POST /slack/events (no GOUACHE_SLACK__APP_TOKEN; requests are "
            "checked with the signing secret, so Slack needs a public URL to reach)")  # fmt: skip


_CHAT_PLATFORMS = (
    _ChatPlatform("Discord", "gouache.bot.adapters.discord.client",
                  lambda s: s.discord.token is not None, "GOUACHE_DISCORD__TOKEN"),
    _ChatPlatform("Slack", "gouache.bot.adapters.slack.app",
                  lambda s: s.slack.mode is not None,
                  "GOUACHE_SLACK__BOT_TOKEN and GOUACHE_SLACK__APP_TOKEN (Socket Mode) or "
                  "GOUACHE_SLACK__SIGNING_SECRET (HTTP)", _slack_mode),
)  # fmt: skip


async def run_service(settings: Settings, *, spawn_worker: bool = True) -> int:
    """Entry point of `gouache run` (the CLI runs it with ``asyncio.run``); the exit code.

    ``spawn_worker=False`` (``--no-worker``) is the scale-out shape: the workers are
    `gouache worker` processes elsewhere, sharing the database."""
    setup_logging(settings.log_level, secrets=settings.secret_values(), json_lines=settings.log_json)
    try:  # data paths, model cache, and a web token off loopback (generated once if none)
        settings = prepare_run(settings)
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        return 2
    setup_logging(settings.log_level, secrets=settings.secret_values(), json_lines=settings.log_json)
    spawn_worker = spawn_worker and settings.worker.spawn  # GOUACHE_WORKER__SPAWN=false: scale-out
    try:
        PromptFilter(settings.moderation)
    except ValueError as exc:
        log.error("bad configuration: %s", exc)
        return 2
    return await serve(settings, spawn_worker=spawn_worker)


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
        supervisor = WorkerSupervisor(settings)
        # A spawned worker is ours: a heartbeat from before now is a previous run's worker.
        watch = GeneratorWatch(settings, since=time.time() if spawn_worker else None,
                               restarts=lambda: supervisor.restarts)  # fmt: skip
        admission = ModeratedAdmission(
            PromptFilter(settings.moderation),
            _admission(storage, settings, watch),
            on_refused=lambda exc: metrics.admission_refusals.labels(reason=type(exc).__name__).inc(),
        )
        wake_delivery = asyncio.Event()
        link_key = load_link_key(settings.data_dir)
        links = ArtifactLinks(settings.web.public_url, link_key,
                              ttl_seconds=settings.web.link_ttl_days * 86400)  # fmt: skip
        prompt_overflow = prompt_length_checker(settings)
        await asyncio.to_thread(prompt_overflow, settings.default_model, "warm up")
        deps = AdapterDeps(
            settings, storage, admission, on_admitted=wake_delivery.set,
            artifact_url=links.url, prompt_overflow=prompt_overflow,
        )  # fmt: skip
        web_adapter = WebAdapter(deps, links)
        adapters: dict[str, Adapter] = {"web": web_adapter}
        extra_routes: list[web.RouteDef] = []
        for platform in _CHAT_PLATFORMS:
            adapter = await _open_chat_adapter(platform, deps, stack)
            if adapter is not None:
                adapters[adapter.platform] = adapter
                extra_routes += adapter.routes()
        delivery = Delivery(storage, adapters, flagged_action=settings.moderation.flagged_action,
                            wake=wake_delivery)  # fmt: skip
        queue_metrics = QueueMetrics(storage, metrics)
        app = make_app(AppDeps(settings, web_adapter, Health(storage, settings, watch=watch),
                               queue_metrics, extra_routes, accepting=lambda: accepting,
                               signing_key=link_key))  # fmt: skip
        runner = web.AppRunner(app, access_log=None, **runner_options(settings))
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


def _admission(storage: Storage, settings: Settings, watch: GeneratorWatch) -> Any:
    from gouache.bot.admission import Admission

    return Admission(storage, settings, watch=watch)


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
    log.info("%s: enabled%s", platform.name, platform.describe(deps.settings))
    return adapter


def _describe_url(url: str) -> str:
    return url.split("@")[-1] if "@" in url else url  # never log a password


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host

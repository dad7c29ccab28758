"""`gouache worker` as a process: logging, signals, storage, then the loop until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket

from gouache.config import Settings
from gouache.errors import CompileError
from gouache.storage import open_storage
from gouache.worker.draining import drain
from gouache.worker.loading import load_generation
from gouache.worker.loop import EXIT_DEVICE_LOST, DeviceLost, Worker

__all__ = ["run_worker_process"]

log = logging.getLogger("gouache.worker")


async def _serve(settings: Settings, worker_id: str) -> int:
    try:  # the default model loaded (and its buckets compiled) before anything is claimed
        engine, scorer, safety = await asyncio.to_thread(load_generation, settings)
    except CompileError as exc:
        log.error("cannot start: %s", exc)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with open_storage(settings.resolved_database_url) as storage:
        worker = Worker(storage, engine, settings, worker_id, scorer, safety)
        log.info("worker %s ready (default model %s)", worker_id, settings.default_model)
        try:
            abandoned = await drain(worker.run(stop), stop, storage, worker_id, settings.worker.drain_seconds)
        except DeviceLost as exc:
            log.critical("sticky device error, exiting for a restart: %s", exc)
            return EXIT_DEVICE_LOST
    log.info("worker %s stopped after %d batches", worker_id, worker.batches)
    if abandoned:  # an engine thread still runs a call whose lanes were handed back: the
        logging.shutdown()  # loop's shutdown would join it, past the pod's grace period
        os._exit(0)
    return 0


def run_worker_process(settings: Settings, worker_id: str | None = None) -> int:
    """Entry point of `gouache worker`: a process of its own, never the bot's event loop."""
    from gouache.observability import setup_logging
    from gouache.startup import StartupError, prepare_worker

    setup_logging(settings.log_level, secrets=settings.secret_values(), json_lines=settings.log_json)
    try:  # data paths, model cache, and which device (says whether CUDA is usable)
        prepare_worker(settings)
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        return 2
    worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
    return asyncio.run(_serve(settings, worker_id))

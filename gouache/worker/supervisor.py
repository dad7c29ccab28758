"""The all-in-one service's worker child: started as `gouache worker`, restarted with backoff.

The child gets the resolved settings as ``GOUACHE_*`` variables (minus chat and web secrets)
and dies with its parent (``PR_SET_PDEATHSIG``); SIGTERM lets it finish its batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
from collections.abc import Callable

from gouache.config import Settings

__all__ = ["WorkerSupervisor", "worker_environment"]

log = logging.getLogger("gouache.service")

# Settings sections the worker never needs: their secrets stay out of its environment.
_NOT_FOR_WORKER = frozenset({"discord", "slack", "web", "admission", "host", "port"})



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

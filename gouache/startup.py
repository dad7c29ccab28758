"""Start-up checks and defaults for `gouache run` and `gouache worker`, in a container or not.

What a container needs before the service opens anything, as functions of the settings rather
than shell in the Dockerfile:

- **data paths**: the data directory (SQLite, artifacts, the web token) must be writable, and
  inside a container the Hugging Face cache (``HF_HOME``) defaults to ``<data_dir>/huggingface``
  so downloaded models live on the one data volume. ``HF_HUB_OFFLINE`` follows ``offline``.
- **the web token**: bound off loopback, the playground needs a token. One from the settings
  (``GOUACHE_WEB__TOKEN`` or ``GOUACHE_WEB__TOKEN_FILE``) wins; otherwise the token stored in
  ``<data_dir>/web-token`` is used; otherwise one is generated, stored there (mode 0600) and
  printed once, on standard output and never through logging. The service never exits for
  want of a token.
- **the device**: which device the worker will generate on, and whether CUDA is usable, said
  in one log line. An explicitly requested CUDA device that is not usable is an error.
- **models the bot cannot place**: a hub id with ``family = "auto"`` has no local
  ``model_index.json`` for the bot to read, so it gets SD's defaults and ``/help`` lists every
  sampler until ``family`` is set: said once, as a warning naming the model.
- **the health check**: ``gouache healthcheck`` asks ``/healthz`` on the configured port.

``import gouache.startup`` loads no torch; ``cuda_report`` imports it when called.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import secrets
import sys
import urllib.error
import urllib.request
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

from pydantic import SecretStr

from gouache.config import BUILTIN_DEMO, BUILTIN_TINY, Settings
from gouache.model_families import FAMILY_NAMES

__all__ = [
    "StartupError",
    "WebToken",
    "DeviceReport",
    "TOKEN_FILE",
    "in_container",
    "prepare_environment",
    "ensure_data_dir",
    "resolve_web_token",
    "prepare_run",
    "prepare_worker",
    "cuda_report",
    "healthcheck_url",
    "healthcheck",
]

log = logging.getLogger("gouache.startup")

TOKEN_FILE = "web-token"  # under data_dir
HF_CACHE_DIR = "huggingface"  # under data_dir, the HF_HOME default inside a container
_WILDCARD = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1", "[::]": "::1"}


class StartupError(Exception):
    """A configuration the service cannot start with; the message says what to change."""


@dataclass(frozen=True)
class WebToken:
    value: str
    source: Literal["configured", "stored", "generated"]
    path: Path | None = None  # where it is stored (stored, generated)


@dataclass(frozen=True)
class DeviceReport:
    device: str  # what the worker will use: "cuda:0", "cpu"
    cuda_usable: bool
    summary: str  # one line for the log
    gpu_present: bool = True  # False: no NVIDIA device at all here, so nothing to fix (a laptop)


# --- data paths ------------------------------------------------------------------------------
def in_container(root: Path = Path("/"), environ: MutableMapping[str, str] | None = None) -> bool:
    """Docker leaves ``/.dockerenv``, podman ``/run/.containerenv`` and ``container=podman``."""
    environ = os.environ if environ is None else environ
    return (
        (root / ".dockerenv").exists()
        or (root / "run" / ".containerenv").exists()
        or bool(environ.get("container"))
    )


def prepare_environment(
    settings: Settings,
    environ: MutableMapping[str, str] | None = None,
    *,
    container: bool | None = None,
) -> dict[str, str]:
    """Set the variables the model libraries read; returns what was set (for tests and logs).

    ``HF_HOME`` defaults to ``<data_dir>/huggingface`` in a container only (a developer's own
    cache stays where it is); an explicit ``HF_HOME`` always wins. ``HF_HUB_OFFLINE`` and
    ``TRANSFORMERS_OFFLINE`` follow ``settings.offline`` unless set explicitly. The worker
    child inherits these through the environment.
    """
    environ = os.environ if environ is None else environ
    container = in_container(environ=environ) if container is None else container
    changed: dict[str, str] = {}
    if container and not environ.get("HF_HOME"):
        changed["HF_HOME"] = str(settings.data_dir.absolute() / HF_CACHE_DIR)
    flag = "1" if settings.offline else "0"
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if name not in environ:
            changed[name] = flag
    environ.update(changed)
    return changed


def ensure_data_dir(settings: Settings, environ: MutableMapping[str, str] | None = None) -> None:
    """Create the data directory and the model cache; refuse clearly when they are not writable."""
    environ = os.environ if environ is None else environ
    folders = [settings.data_dir]
    if environ.get("HF_HOME"):
        folders.append(Path(environ["HF_HOME"]))
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StartupError(_not_writable(folder, exc)) from exc


def _not_writable(folder: Path, exc: OSError) -> str:
    owner = ""
    with contextlib.suppress(OSError):
        stat = folder.stat() if folder.exists() else folder.parent.stat()
        owner = f" (owned by uid {stat.st_uid}; this process runs as uid {os.getuid()})"
    return (
        f"cannot write to {folder}{owner}: {exc.strerror or exc}. Give the data volume to this "
        "user (a named volume does this by itself; for a host folder: chown -R 10001:10001 it), "
        "or set GOUACHE_DATA_DIR to a writable folder"
    )


# --- the web token ---------------------------------------------------------------------------
def resolve_web_token(settings: Settings) -> WebToken | None:
    """The token the playground requires, or ``None`` on loopback without one configured."""
    if settings.web.token is not None:
        value = settings.web.token.get_secret_value().strip()
        if value:
            return WebToken(value, "configured")
    if settings.is_loopback:
        return None
    path = settings.data_dir / TOKEN_FILE
    stored = _read_token(path)
    if stored:
        return WebToken(stored, "stored", path)
    value = secrets.token_urlsafe(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two processes starting at once cannot both write a different token.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        stored = _read_token(path)
        if stored:
            return WebToken(stored, "stored", path)
        path.unlink(missing_ok=True)  # an empty file left by a crash
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise StartupError(_not_writable(path.parent, exc)) from exc
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(value + "\n")
    return WebToken(value, "generated", path)


def _read_token(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise StartupError(f"cannot read the stored web token {path}: {exc.strerror or exc}") from exc


def public_url(settings: Settings, token: str | None = None) -> str:
    """The playground's address as a person on this machine (or the published port) opens it."""
    host = _WILDCARD.get(settings.host, settings.host)
    host = "localhost" if host in ("127.0.0.1", "::1") else host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.port}/" + (f"?token={token}" if token else "")


def _announce(token: WebToken, settings: Settings, out: TextIO) -> None:
    """The one place a generated token is shown: standard output, not the (redacted) log."""
    bar = "=" * 72
    out.write(
        f"{bar}\n"
        f"gouache: generated a token for the web playground on {settings.host}:{settings.port}.\n"
        f"It is shown only this once and stored in {token.path} (mode 0600).\n"
        f"  token: {token.value}\n"
        f"  open:  {public_url(settings, token.value)}\n"
        "  (use the host and port you published; API calls send Authorization: Bearer <token>)\n"
        f"{bar}\n"
    )
    out.flush()


# --- the device ------------------------------------------------------------------------------
def cuda_report(
    device: str = "auto", torch_module: Any = None, *, root: Path = Path("/"),
    environ: MutableMapping[str, str] | None = None,
) -> DeviceReport:
    """Which device the worker will use and whether CUDA works, checked by running on it.

    ``device`` is ``worker.device``: ``auto`` takes the first CUDA device when one is usable,
    else the CPU; ``cuda``/``cuda:N`` must be usable (``StartupError`` otherwise); ``cpu``
    skips CUDA entirely. ``torch_module`` is for tests.
    """
    if device == "cpu":
        return DeviceReport("cpu", False, "device: cpu (worker.device = cpu)")
    torch = torch_module if torch_module is not None else importlib.import_module("torch")
    build = getattr(torch.version, "cuda", None)
    version = getattr(torch, "__version__", "?")
    reason = ""
    index = 0
    if device not in ("auto", "cuda"):
        try:
            index = int(device.split(":", 1)[1])
        except (IndexError, ValueError) as exc:
            raise StartupError(f"worker.device must be auto, cpu, cuda or cuda:N, not {device!r}") from exc
    if build is None:
        reason = f"torch {version} is a CPU-only build"
    else:
        try:
            torch.cuda.init()
            count = torch.cuda.device_count()
        except Exception as exc:  # torch says why: no driver, too old a driver, no device
            reason = _first_line(exc)
            count = 0
        if not reason and count == 0:
            reason = "no CUDA device is visible"
        elif not reason and index >= count:
            reason = f"cuda:{index} asked for, but only {count} CUDA device(s) are visible"
    if not reason:
        try:
            name = torch.cuda.get_device_name(index)
            total = torch.cuda.get_device_properties(index).total_memory
            probe = torch.ones((64, 64), device=f"cuda:{index}")
            float((probe @ probe).sum().item())  # a kernel really runs
        except Exception as exc:
            reason = f"cuda:{index} failed a test kernel: {_first_line(exc)}"
    if not reason:
        summary = (
            f"device: cuda:{index} ({name}, {total / 2**30:.1f} GiB), CUDA usable "
            f"(torch {version}, CUDA {build}, {count} device(s) visible)"
        )
        return DeviceReport(f"cuda:{index}", True, summary)
    environ = os.environ if environ is None else environ
    hint = _gpu_hint(root, environ)
    if device != "auto":
        raise StartupError(f"worker.device = {device}, but CUDA is not usable: {reason}.{hint}")
    gpu_present = any((root / "dev").glob("nvidia[0-9]*")) or in_container(root, environ)
    if not gpu_present:  # a laptop or a CPU server: nothing to fix, only to know
        return DeviceReport("cpu", False, f"device: cpu, no NVIDIA GPU on this machine ({reason}). "
                            "builtin:demo runs well on a CPU; real models are slow without a GPU.",
                            gpu_present=False)  # fmt: skip
    return DeviceReport(
        "cpu", False, f"device: cpu, CUDA not usable: {reason}.{hint} Generating on the CPU is slow."
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0].rstrip(".")


def _gpu_hint(root: Path, environ: MutableMapping[str, str]) -> str:
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return f" CUDA_VISIBLE_DEVICES={visible!r} hides every GPU."
    if in_container(root, environ) and not any((root / "dev").glob("nvidia[0-9]*")):
        return (
            " No /dev/nvidia* device here: give the container a GPU (docker run --gpus all, or"
            " compose's deploy.resources.reservations.devices) and install the NVIDIA"
            " Container Toolkit on the host."
        )
    return ""


# --- what `gouache run` and `gouache worker` call ----------------------------------------------
def prepare_run(
    settings: Settings,
    *,
    environ: MutableMapping[str, str] | None = None,
    out: TextIO | None = None,
) -> Settings:
    """Everything `gouache run` needs before it opens storage; the settings to run with.

    Returns ``settings`` with ``web.token`` filled in when the playground needs one (see the
    module docstring). Raises ``StartupError`` for what cannot be fixed here.
    """
    environ = os.environ if environ is None else environ
    prepare_environment(settings, environ)
    ensure_data_dir(settings, environ)
    _log_paths(settings, environ)
    _warn_unplaced_models(settings)
    token = resolve_web_token(settings)
    if token is None:
        log.info("web: no token, loopback only (%s)", settings.host)
        return settings
    if token.source == "generated":
        _announce(token, settings, out or sys.stdout)
        log.info("web: token required; a new one was generated and stored in %s", token.path)
    elif token.source == "stored":
        log.info("web: token required; using the one stored in %s (printed at its first start)",
                 token.path)  # fmt: skip
    else:
        log.info("web: token required; using the configured one")
    web = settings.web.model_copy(update={"token": SecretStr(token.value)})
    return settings.model_copy(update={"web": web})


def prepare_worker(settings: Settings, *, environ: MutableMapping[str, str] | None = None,
                   torch_module: Any = None) -> DeviceReport:  # fmt: skip
    """Everything `gouache worker` needs before it loads a model: paths, then the device check."""
    environ = os.environ if environ is None else environ
    prepare_environment(settings, environ)
    ensure_data_dir(settings, environ)
    report = cuda_report(settings.worker.device, torch_module)
    quiet = report.cuda_usable or settings.worker.device == "cpu" or not report.gpu_present
    (log.info if quiet else log.warning)(
        "%s", report.summary
    )
    return report


def _warn_unplaced_models(settings: Settings) -> None:
    quoted = [f'"{name}"' for name in FAMILY_NAMES]
    families = f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    for name, spec in settings.models.items():
        local = spec.path in (BUILTIN_TINY, BUILTIN_DEMO) or Path(spec.path).exists()
        if spec.family == "auto" and not local:  # no model_index.json for the bot to read
            log.warning('model %s: "%s" is not a local folder and its family is "auto", so the bot '
                        "cannot tell which family it is: it gets SD's defaults (%d steps, %s) and "
                        "/help lists every sampler. Set family = %s in [models.%s].",
                        name, spec.path, spec.default_steps, spec.default_sampler, families, name)  # fmt: skip


def _log_paths(settings: Settings, environ: MutableMapping[str, str]) -> None:
    cache = environ.get("HF_HOME") or "the Hugging Face default (~/.cache/huggingface)"
    offline = "offline" if settings.offline else "downloads allowed"
    log.info("data: %s; model cache: %s (%s)", settings.data_dir.absolute(), cache, offline)


# --- the health check ------------------------------------------------------------------------
def healthcheck_url(settings: Settings) -> str:
    """``/healthz`` on the configured port, reached from inside the same machine or container."""
    if settings.port == 0:
        raise StartupError("port is 0 (a random port): set GOUACHE_PORT for the health check")
    host = _WILDCARD.get(settings.host, settings.host)
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.port}/healthz"


def healthcheck(settings: Settings, *, timeout: float = 5.0, out: TextIO | None = None) -> int:
    """`gouache healthcheck`: 0 when ``/healthz`` answers 200, else 1 (what Docker expects)."""
    out = out or sys.stdout
    try:
        url = healthcheck_url(settings)
    except StartupError as exc:
        out.write(f"unhealthy: {exc}\n")
        return 1
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except (OSError, ValueError) as exc:
        out.write(f"unhealthy: {url}: {getattr(exc, 'reason', exc)}\n")
        return 1
    try:
        details = json.loads(body)
    except ValueError:
        details = {"body": body[:200].decode(errors="replace")}
    out.write(f"{'healthy' if status == 200 else 'unhealthy'}: {url} {status} {json.dumps(details)}\n")
    return 0 if status == 200 else 1

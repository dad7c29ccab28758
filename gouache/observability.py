"""Logging with secret redaction, and Prometheus metrics on an injected registry.

Secrets never reach a log line: the configured secret values are masked wherever they appear,
and so are token-shaped strings (Slack ``xox*-`` tokens, Discord bot tokens, interaction
webhook URLs) that a library might print on its own (discord.py's DEBUG log prints URLs that
carry interaction tokens).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["RedactingFilter", "setup_logging", "Metrics", "quiet_model_libraries"]

_TOKEN_PATTERNS = (
    re.compile(r"xox[abposr]-[A-Za-z0-9-]{6,}"),  # Slack tokens
    re.compile(r"xapp-[A-Za-z0-9-]{6,}"),
    re.compile(r"[MNO][A-Za-z\d_-]{23,27}\.[A-Za-z\d_-]{6}\.[A-Za-z\d_-]{27,40}"),  # Discord bot
    re.compile(r"(/(?:webhooks|interactions)/\d+/)[A-Za-z0-9_.-]{20,}"),  # interaction tokens
    re.compile(r"(?i)(authorization:\s*(?:bot|bearer)\s+)\S+"),
    re.compile(r"(postgres(?:ql)?://[^:/@\s]+:)[^@\s]+(@)"),  # passwords in database URLs
    # Slack response_url / webhook URLs, also JSON-escaped (\/) and form-encoded (%2F)
    re.compile(r"(hooks\.slack\.com(?:/|\\/|%2[fF])(?:commands|actions|services|app)(?:/|\\/|%2[fF]))"
               r"[^\s\"'<>&,]+"),
    # The web edge: signed-link signatures, ?token=, its cookies, and browser user ids
    # (a user id in a cookie is that user's key to their jobs), wherever aiohttp dumps them.
    re.compile(r"(?i)([?&;]sig=)[^&\s\"'<>]+"),
    re.compile(r"(?i)([?&;]token=)[^&\s\"'<>]+"),
    re.compile(r"((?:__Host-)?gouache_(?:user|session|token)=)[^;\s\"'<>,]+"),
    re.compile(r"(web:)(?!user:)[A-Za-z0-9_-]{20,}(?:\.[A-Za-z0-9_-]+)?"),
)
MASK = "***"
_CHATTY_LIBRARIES = ("discord", "slack_sdk", "aiosqlite")


class RedactingFilter(logging.Filter):
    """Masks known secret values and token-shaped strings in every record."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        for pattern in _TOKEN_PATTERNS:
            text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + MASK
                               + (m.group(2) if (m.lastindex or 0) >= 2 else ""), text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = self.redact(message), None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("job_id", "worker_id", "platform"):
            if hasattr(record, key):
                data[key] = getattr(record, key)
        if record.exc_text:
            data["exc"] = record.exc_text
        return json.dumps(data)


def setup_logging(level: str = "INFO", *, secrets: Iterable[str] = (), json_lines: bool = False) -> None:
    """Configure the root logger once, at the edge of the process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter(secrets))
    handler.setFormatter(
        _JsonFormatter() if json_lines else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries whose DEBUG lines carry secrets stay at INFO at most: discord.py prints URLs
    # with interaction tokens, slack_sdk prints webhook URLs (a command's response_url) and
    # request bodies, aiosqlite prints every statement with its parameters (a job's row holds
    # its reply token: that response_url, or a Discord interaction token).
    for name in _CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))


# Generation on a GPU queue takes seconds to minutes: buckets reach 30 minutes instead of the
# client library's 10-second default.
_SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)


@dataclass
class Metrics:
    """Every metric gouache exports, registered on one injected registry."""

    registry: CollectorRegistry

    def __post_init__(self) -> None:
        r = self.registry
        self.queue_depth = Gauge("gouache_queue_depth", "Jobs waiting in the queue", registry=r)
        self.jobs_running = Gauge("gouache_jobs_running", "Jobs being generated", registry=r)
        self.queue_wait = Histogram(
            "gouache_queue_wait_seconds", "Time from enqueue to claim", buckets=_SECONDS_BUCKETS, registry=r
        )
        self.generation_time = Histogram(
            "gouache_generation_seconds", "Wall time of one batch", buckets=_SECONDS_BUCKETS, registry=r
        )
        self.batch_size = Histogram(
            "gouache_batch_size_images", "Images per pipeline call", buckets=_BATCH_BUCKETS, registry=r
        )
        self.images = Counter("gouache_images_generated_total", "Images generated", registry=r)
        self.jobs_finished = Counter(
            "gouache_jobs_finished_total", "Jobs that reached a final state", ["status"], registry=r
        )
        self.failures = Counter(
            "gouache_failures_total", "Failures by reason", ["reason"], registry=r
        )
        self.admission_refusals = Counter(
            "gouache_admission_refusals_total", "Requests refused at admission", ["reason"], registry=r
        )
        self.gpu_memory = Gauge(
            "gouache_gpu_memory_bytes", "GPU memory allocated by the worker", ["kind"], registry=r
        )
        self.worker_heartbeat_age = Gauge(
            "gouache_worker_heartbeat_age_seconds", "Seconds since a worker last heartbeated", registry=r
        )


def quiet_model_libraries() -> None:
    """diffusers and transformers draw progress bars on every load; a service wants log lines."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_warning()
    transformers_logging.set_verbosity_warning()

"""Logs never carry secrets; metrics follow Prometheus naming."""

from __future__ import annotations

import json
import logging

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gouache.observability import Metrics, RedactingFilter, setup_logging

DISCORD_TOKEN = "MTA5ODc2NTQzMjEwOTg3NjU0Mw.GaBcDe.abcdefghijklmnopqrstuvwxyz0123456789AB"


@pytest.fixture
def logs(capfd: pytest.CaptureFixture[str]):
    """Call inside the test (pytest rewires logging between phases); returns a reader."""

    def start():
        setup_logging("DEBUG", secrets=["s3cret-signing-value"], json_lines=True)
        return lambda: [json.loads(line) for line in capfd.readouterr().err.splitlines() if line]

    yield start
    logging.getLogger().handlers.clear()


def test_configured_secrets_and_token_shapes_are_masked(logs) -> None:
    read = logs()
    log = logging.getLogger("gouache.test")
    log.info("signing secret is %s", "s3cret-signing-value")
    log.info("bot token %s and xoxb-12345-67890-abcdefABCDEF", DISCORD_TOKEN)
    log.debug("POST https://discord.com/api/v10/webhooks/123456789/aW50ZXJhY3Rpb246MTIzNDU2Nzg5MA/messages/@original")
    log.warning("db at postgresql://gouache:hunter2hunter2@db:5432/gouache")
    try:
        raise RuntimeError("failed with Authorization: Bot " + DISCORD_TOKEN)
    except RuntimeError:
        log.exception("request failed")
    text = json.dumps(read())
    for secret in ("s3cret-signing-value", DISCORD_TOKEN, "xoxb-12345", "aW50ZXJhY3Rpb246",
                   "hunter2hunter2"):  # fmt: skip
        assert secret not in text
    assert text.count("***") >= 5
    assert "webhooks/123456789/***" in text  # the route stays readable


def test_json_lines_carry_level_logger_and_message(logs) -> None:
    read = logs()
    logging.getLogger("gouache.worker").warning("lease lost for job %s", "abc")
    [line] = read()
    assert line["level"] == "WARNING" and line["logger"] == "gouache.worker"
    assert line["message"] == "lease lost for job abc"


def test_short_or_empty_secrets_do_not_mask_everything() -> None:
    assert RedactingFilter(["", "ab"]).redact("a cab stand") == "a cab stand"


def test_metric_names_follow_prometheus_conventions() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.queue_wait.observe(90)
    metrics.images.inc(3)
    text = generate_latest(registry).decode()
    assert 'gouache_queue_wait_seconds_bucket{le="120.0"} 1.0' in text  # buckets reach minutes
    assert 'gouache_queue_wait_seconds_bucket{le="60.0"} 0.0' in text
    assert "gouache_images_generated_total 3.0" in text
    names = {m.name for m in registry.collect()}
    assert all(name.startswith("gouache_") for name in names)


def test_web_edge_secrets_and_user_ids_are_masked() -> None:
    """aiohttp dumps request lines and headers: signed-link sigs, ?token=, cookies and
    browser user ids (a user id is that user's key to their jobs) never reach a log line."""
    user = "web:Zx9_aB3-cD4eF5gH6iJ7kL"
    text = RedactingFilter().redact(
        f"GET /files/j1/image-0.png?exp=1700000000&sig=0123456789abcdef HTTP/1.1 "
        f"Cookie: gouache_user={user}.AbCdEfGhIjKlMnOpQrStUv; __Host-gouache_session=s3ss "
        f"GET /?token=t0ps3cret user {user} and web:user:kim"
    )
    for secret in ("0123456789abcdef", "Zx9_aB3", "AbCdEfGh", "s3ss", "t0ps3cret"):
        assert secret not in text
    assert "sig=***" in text and "exp=1700000000" in text and "web:user:kim" in text

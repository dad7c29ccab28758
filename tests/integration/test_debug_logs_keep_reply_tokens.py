"""At DEBUG, no log line carries a job's reply token (Slack response_url, Discord token).

Found by the chaos run (benchmarks/chaos.py), which scans every DEBUG line of the service and
workers for the secrets it handed out: aiosqlite's DEBUG log printed every statement with its
parameters (the job's params JSON holds ``origin.reply_token``), and slack_sdk's printed the
response_url of every ephemeral reply it sent.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from slack_sdk.webhook.async_client import AsyncWebhookClient

from gouache.observability import RedactingFilter, setup_logging
from gouache.storage import open_storage
from tests.fakes.fake_slack import FakeSlack
from tests.support.factories import make_request


@pytest.fixture
def debug_logs(capfd: pytest.CaptureFixture[str]):
    def start():
        setup_logging("DEBUG", secrets=["xoxb-bot-token-1234"])
        return lambda: capfd.readouterr().err

    yield start
    logging.getLogger().handlers.clear()
    logging.getLogger().setLevel(logging.WARNING)


async def test_storage_and_slack_replies_log_no_reply_token(tmp_path: Path, debug_logs) -> None:
    read = debug_logs()
    async with FakeSlack() as fake, open_storage(f"sqlite:///{tmp_path / 'q.db'}") as storage:
        url = fake.response_url()
        request = make_request(platform="slack")
        request = type(request)(**{**request.__dict__, "origin": type(request.origin)(
            **{**request.origin.__dict__, "reply_token": url})})  # fmt: skip
        job, _ = await storage.enqueue(request)
        assert (await storage.get_job(job.id)).request.origin.reply_token == url
        await AsyncWebhookClient(url).send(text="Queued: next in line.")
        assert [c.method for c in fake.calls] == ["response"]
    logging.getLogger("gouache.test").debug("still logging at DEBUG")
    text = read()
    assert "still logging at DEBUG" in text
    assert url not in text and url.rsplit("/", 1)[0] not in text


def test_slack_response_urls_are_masked_wherever_they_appear() -> None:
    line = RedactingFilter().redact("posting to https://hooks.slack.com/commands/T01/123/AbCdEf, ok")
    assert line == "posting to https://hooks.slack.com/commands/***, ok"

"""Hostile requests to POST /slack/events: every bad signature or timestamp is a plain 401.

The fuzz test sends well over a thousand forged, stale, missing and malformed requests (each
built from a real, correctly signed one by breaking one thing) and counts what came back:
nothing may be accepted, nothing may be answered with anything but 401, no job may be queued,
no Web API call made, and no byte of any body may reach the log.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from gouache.storage import open_storage
from tests.fakes.fake_slack import SlackSender, sign
from tests.fakes.slack_app import SECRET, SlackApp, slack_app

FUZZ_REQUESTS = 1200
MARK = "fuzz-secret-prompt"


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[SlackApp]:
    async with open_storage(f"sqlite:///{tmp_path / 'q.db'}") as storage, slack_app(
        storage, tmp_path
    ) as harness:  # fmt: skip
        yield harness


def _body(rng: random.Random, n: int, response_url: str = "https://hooks.slack.com/commands/T1/1/a") -> str:
    return urlencode({"command": "/imagine", "text": f"{MARK}-{n} a cube", "user_id": "U1",
                      "channel_id": "C1", "team_id": "T1", "trigger_id": f"t{n}",
                      "response_url": response_url})  # fmt: skip


_BAD_TIMESTAMPS = ["", " ", "soon", "\u00b2", "\u0663\u0663", "9" * 5000, "-1", "+1", "1e9",
                   "1.5", "0x10", " 1 ", "１２３", "nan", "1" * 13]  # fmt: skip


def _forged(rng: random.Random, n: int) -> tuple[str, dict[str, str]]:
    """One request that breaks exactly one rule (or several, by chance).

    (Whitespace around a header value is not part of it in HTTP, so " v0=..." is a valid
    signature, not a forged one, and is not sent here.)
    """
    body = _body(rng, n)
    now = int(time.time())
    good_ts = str(now)
    good_sig = sign(SECRET, body, good_ts)
    headers = {"Content-Type": "application/x-www-form-urlencoded",
               "X-Slack-Request-Timestamp": good_ts, "X-Slack-Signature": good_sig}  # fmt: skip
    case = n % 12
    if case == 0:  # forged: random hex
        headers["X-Slack-Signature"] = "v0=" + "".join(rng.choice("0123456789abcdef") for _ in range(64))
    elif case == 1:  # stale or from the future, correctly signed for that time
        ts = str(now + rng.choice([-1, 1]) * rng.randint(301, 10**8))
        headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"] = ts, sign(SECRET, body, ts)
    elif case == 2:  # malformed timestamp, signed over it
        ts = rng.choice(_BAD_TIMESTAMPS)
        headers["X-Slack-Request-Timestamp"] = ts
        headers["X-Slack-Signature"] = sign(SECRET, body, ts)
    elif case == 3:  # missing headers
        headers.pop(rng.choice(["X-Slack-Request-Timestamp", "X-Slack-Signature"]))
    elif case == 4:  # signed with another secret
        headers["X-Slack-Signature"] = sign("not-the-secret", body, good_ts)
    elif case == 5:  # the body changed after signing
        body = body.replace("a+cube", "a+sphere")
    elif case == 6:  # malformed signatures
        headers["X-Slack-Signature"] = rng.choice([
            "", "v0=", "v1=" + good_sig[3:], good_sig.upper(), good_sig[:-1], good_sig + "0",
            "v0=" + "é" * 64, good_sig.replace("v0=", ""), "v0=" + "g" * 64,
            good_sig[:3] + " " + good_sig[3:], good_sig + ",v0=" + "0" * 64])  # fmt: skip
    elif case == 7:  # signed for another timestamp
        headers["X-Slack-Request-Timestamp"] = str(now - 1)
    elif case == 8:  # random bytes in headers
        headers["X-Slack-Signature"] = "".join(chr(rng.randint(33, 126)) for _ in range(rng.randint(0, 80)))
    elif case == 9:  # a huge timestamp that is digits only
        ts = "9" * rng.randint(13, 400)
        headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"] = ts, sign(SECRET, body, ts)
    elif case == 10:  # the retry header does not make a forged request acceptable
        headers["X-Slack-Retry-Num"] = "1"
        headers["X-Slack-Signature"] = sign(SECRET, body + "x", good_ts)
    else:  # empty body signed with a stale timestamp
        ts = str(now - 301)
        body = ""
        headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"] = ts, sign(SECRET, body, ts)
    return body, headers


async def test_fuzzed_signatures_and_timestamps_are_all_401(
    app: SlackApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rng = random.Random(11)
    assert isinstance(app.slack, SlackSender)
    statuses: Counter[int] = Counter()
    for n in range(FUZZ_REQUESTS):
        body, headers = _forged(rng, n)
        status, _ = await app.slack.post(body.encode(), "", headers=headers)
        statuses[status] += 1
    assert statuses == Counter({401: FUZZ_REQUESTS}), statuses
    assert await app.jobs() == []
    assert [c for c in app.fake.calls if c.method != "auth.test"] == []
    assert all(MARK not in r.getMessage() for r in caplog.records)
    assert all("hooks.slack.com" not in r.getMessage() for r in caplog.records)
    # and the same request, signed properly, is accepted: the fuzz broke only what it meant to
    body = _body(rng, 0, app.fake.response_url())
    status, _ = await app.slack.post(body, "application/x-www-form-urlencoded")
    assert status == 200
    await app.replies()
    assert len(await app.jobs()) == 1


@pytest.mark.parametrize("timestamp", ["soon", "", "\u00b2", "9" * 5000, "-1", "1.0"])
async def test_malformed_timestamp_is_401_not_400(app: SlackApp, timestamp: str) -> None:
    assert isinstance(app.slack, SlackSender)
    body = "command=%2Fimagine&text=x"
    status, _ = await app.slack.post(body, "application/x-www-form-urlencoded",
                                     timestamp=timestamp, signature=sign(SECRET, body, timestamp))  # fmt: skip
    assert status == 401


async def test_bad_signature_is_rejected_without_logging_the_body(
    app: SlackApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert isinstance(app.slack, SlackSender)
    status, _ = await app.slack.post(
        "command=%2Fimagine&text=secret-prompt-text", "application/x-www-form-urlencoded",
        signature="v0=" + "0" * 64,
    )  # fmt: skip
    assert status == 401
    assert all("secret-prompt-text" not in r.getMessage() for r in caplog.records)
    assert await app.jobs() == []


async def test_response_urls_are_redacted_in_logs() -> None:
    from gouache.observability import RedactingFilter

    url = "https://hooks.slack.com/commands/T0001/1234567890/AbCdEfGhIjKlMnOp"
    redacted = RedactingFilter().redact(f"posting to {url} failed")
    assert "AbCdEf" not in redacted and "1234567890" not in redacted
    assert redacted == "posting to https://hooks.slack.com/commands/*** failed"
    escaped = '{"response_url":"https:\\/\\/hooks.slack.com\\/commands\\/T1\\/99\\/SeCrEt"}'
    assert "SeCrEt" not in RedactingFilter().redact(escaped)
    form = "response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1%2F99%2FSeCrEt&text=x"
    assert RedactingFilter().redact(form) == "response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2F***&text=x"

"""`gouache run` started the way the container starts it, as a real process.

The environment comes from the Dockerfile's own ``ENV`` lines (``/data`` moved to a temporary
folder, the port moved to a free one), the command is the image's ``CMD`` (no flags), and the
model is the default ``builtin:demo``: bound to 0.0.0.0 with no token configured, the service
must come up healthy with a generated token (printed once, stored on the data volume, accepted
by the web API) instead of exiting 2 as it used to, which restart-looped the container.
The scale-out test runs compose's ``bot`` + ``worker`` pair on PostgreSQL, the database URL
read from a secret file as compose passes it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from gouache import messages

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]
_TOKEN_LINE = re.compile(r"^  token: (\S+)$", re.MULTILINE)


def dockerfile_env() -> dict[str, str]:
    """Every ``ENV`` of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for pair in shlex.split(line[4:]):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def dockerfile_cmd() -> list[str]:
    line = next(x for x in (REPO / "Dockerfile").read_text().splitlines() if x.startswith("CMD "))
    return json.loads(line[4:])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def container_env(data: Path, port: int, **extra: str) -> dict[str, str]:
    """The image's environment, with /data at ``data``; PATH and the venv stay this machine's."""
    image = dockerfile_env()
    assert image["GOUACHE_HOST"] == "0.0.0.0" and "GOUACHE_WEB__TOKEN" not in image
    env = {k: v.replace("/data", str(data)) for k, v in image.items()
           if k not in ("PATH", "VIRTUAL_ENV")}  # fmt: skip
    env["GOUACHE_PORT"] = str(port)
    base = {k: v for k, v in os.environ.items() if not k.startswith("GOUACHE_")}
    return {**base, **env, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **extra}


class Process:
    """One gouache command with its output in a file, read while it runs."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> None:
        assert argv[0] == "gouache"
        self.log_path = log
        self._log = log.open("ab")
        self.process = subprocess.Popen([sys.executable, "-m", "gouache", *argv[1:]], cwd=cwd, env=env,
                                        stdout=self._log, stderr=subprocess.STDOUT)  # fmt: skip

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 120) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text())
            if found:
                return found
            if self.process.poll() is not None:
                raise AssertionError(f"exited {self.process.returncode}:\n{self.text()}")
            time.sleep(0.1)
        raise AssertionError(f"{pattern!r} not logged within {timeout}s:\n{self.text()}")

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()


def call(base: str, method: str, path: str, token: str | None = None,
         body: dict[str, Any] | None = None) -> tuple[int, Any]:  # fmt: skip
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw, status = response.read(), response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def wait_healthy(base: str, proc: Process, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: Any = None
    while time.monotonic() < deadline:
        if proc.process.poll() is not None:
            raise AssertionError(f"exited {proc.process.returncode}:\n{proc.text()}")
        try:
            status, body = call(base, "GET", "/healthz")
        except OSError:
            status = 0
        if status == 200:
            return body
        time.sleep(0.25)
    raise AssertionError(f"never healthy ({body}):\n{proc.text()}")


def wait_job(base: str, token: str, job_id: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job: Any = None
    while time.monotonic() < deadline:
        status, job = call(base, "GET", f"/api/jobs/{job_id}", token)
        if status == 200 and job["status"] in ("succeeded", "failed", "dead", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def healthcheck_exit(env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """The image's HEALTHCHECK command, run with the container's environment."""
    line = next(x for x in (REPO / "Dockerfile").read_text().splitlines() if x.startswith("HEALTHCHECK"))
    argv = json.loads(line.split(" CMD ", 1)[1])
    assert argv[:2] == ["gouache", "healthcheck"]
    done = subprocess.run([sys.executable, "-m", "gouache", *argv[1:]], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def test_container_start_without_a_token_comes_up_healthy_with_a_generated_one(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    env = container_env(data, port)
    base = f"http://127.0.0.1:{port}"
    service = Process(dockerfile_cmd(), env, tmp_path / "first.log", cwd=tmp_path)
    try:
        service.wait_for_log(rf"web playground: http://0\.0\.0\.0:{port}/ \(token required\)")
        health = wait_healthy(base, service)  # the worker child loaded builtin:demo and heartbeats
        assert health["status"] == "ok" and health["database"] == "ok"
        log = service.text()
        tokens = _TOKEN_LINE.findall(log)
        assert len(tokens) == 1, log  # printed once
        token = tokens[0]
        assert log.count(token) == 2  # the token line and the ?token= link, nowhere else
        assert (data / "web-token").read_text().strip() == token  # on the data volume
        assert (data / "gouache.db").is_file()
        assert re.search(r"gouache\.startup: device: (cpu, CUDA not usable: |cuda:\d+ \()", log), log
        assert f"model cache: {data}/huggingface (offline)" in log

        assert call(base, "GET", "/api/jobs")[0] == 401
        assert call(base, "GET", "/api/jobs", "wrong-token")[0] == 401
        assert call(base, "GET", "/api/jobs", token)[0] == 200
        status, created = call(base, "POST", "/api/jobs", token, {"command": "/imagine a red circle --seed 3"})
        assert status == 202, created
        job = wait_job(base, token, created["id"])
        assert job["status"] == "succeeded", job
        code, output = healthcheck_exit(env, tmp_path)
        assert code == 0 and output.startswith(f"healthy: http://127.0.0.1:{port}/healthz 200"), output
    finally:
        first_exit = service.stop()
    assert first_exit == 0, service.text()

    # A restart (the container recreated on the same volume) keeps the token and prints nothing.
    again = Process(dockerfile_cmd(), env, tmp_path / "second.log", cwd=tmp_path)
    try:
        wait_healthy(base, again)
        assert token not in again.text()
        assert "using the one stored in" in again.text()
        assert call(base, "GET", "/api/jobs", token)[0] == 200
        assert call(base, "GET", f"/api/jobs/{created['id']}", token)[1]["status"] == "succeeded"
    finally:
        assert again.stop() == 0, again.text()
    code, output = healthcheck_exit(env, tmp_path)  # nothing listens any more
    assert code == 1 and output.startswith("unhealthy:"), output


async def _truncate(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        tables = [r["tablename"] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migrations'")]
        await conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE")
    finally:
        await conn.close()


@pytest.mark.postgres
def test_scale_out_bot_without_worker_child_and_a_separate_worker(tmp_path: Path, pg_url: str) -> None:
    """compose's scale-out profile: `gouache run` with worker.spawn off, `gouache worker` apart."""
    asyncio.run(_truncate(pg_url))
    secret = tmp_path / "secrets" / "database_url"
    secret.parent.mkdir()
    secret.write_text(pg_url + "\n")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    shared = {"GOUACHE_DATABASE_URL_FILE": str(secret)}
    bot_env = container_env(tmp_path / "bot-data", port, GOUACHE_WORKER__SPAWN="false", **shared)
    bot = Process(["gouache", "run"], bot_env, tmp_path / "bot.log", cwd=tmp_path)
    worker: Process | None = None
    try:
        bot.wait_for_log(r"worker: not started here")
        assert "worker: started child process" not in bot.text()
        token = _TOKEN_LINE.findall(bot.text())[0]
        status, body = call(base, "GET", "/healthz")
        assert status == 503 and body["worker"] == messages.no_worker_yet()
        status, created = call(base, "POST", "/api/jobs", token, {"command": "/imagine a blue square"})
        assert status == 202, created

        worker_env = container_env(tmp_path / "worker-data", free_port(), **shared)
        worker = Process(["gouache", "worker", "--worker-id", "gpu0"], worker_env,
                         tmp_path / "worker.log", cwd=tmp_path)  # fmt: skip
        worker.wait_for_log(r"worker gpu0 ready")
        assert "device: " in worker.text()
        assert wait_job(base, token, created["id"])["status"] == "succeeded"
        assert wait_healthy(base, bot)["worker"] == "ok"
    finally:
        if worker is not None:
            assert worker.stop() == 0, worker.text()
        assert bot.stop() == 0, bot.text()


def test_slack_http_mode_url_verification_passes_the_web_token_wall(tmp_path: Path) -> None:
    """In a container the playground needs a token, but Slack signs its requests instead: the
    URL verification Slack sends when you set the Request URL must reach the Slack adapter."""
    import hashlib
    import hmac

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    secret = "8f742231b10e8888abcd99yyyzzz85a5"
    env = container_env(tmp_path / "data", port, GOUACHE_WORKER__SPAWN="false",
                        GOUACHE_SLACK__BOT_TOKEN="xoxb-test-not-real",
                        GOUACHE_SLACK__SIGNING_SECRET=secret,
                        GOUACHE_SLACK__API_BASE="http://127.0.0.1:9/api/")  # fmt: skip
    bot = Process(["gouache", "run"], env, tmp_path / "bot.log", cwd=tmp_path)
    try:
        bot.wait_for_log(r"Slack: enabled")
        bot.wait_for_log(r"\bready\b")
        body = json.dumps({"type": "url_verification", "token": "x", "challenge": "c4ll3ng3"}).encode()
        stamp = str(int(time.time()))
        signature = "v0=" + hmac.new(secret.encode(), b"v0:" + stamp.encode() + b":" + body,
                                     hashlib.sha256).hexdigest()  # fmt: skip
        request = urllib.request.Request(base + "/slack/events", data=body, method="POST", headers={
            "Content-Type": "application/json", "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": signature})  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
            assert json.loads(response.read()) == {"challenge": "c4ll3ng3"}
        # Unsigned, it is still refused (by the adapter's signature check, not let through).
        status, answer = call(base, "POST", "/slack/events", None, {"type": "url_verification", "challenge": "x"})
        assert status in (400, 401) and "c4ll3ng3" not in str(answer) and "token is required" not in str(answer)
        assert call(base, "GET", "/api/jobs")[0] == 401  # and the playground still wants its token
    finally:
        assert bot.stop() == 0, bot.text()

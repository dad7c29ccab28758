"""`gouache run` as a real process: startup lines, the API, SIGTERM, and a crash + restart.

The worker child uses the timed fake engine (no torch work), so these run in seconds.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


class Service:
    """One `gouache run` process with its log in a file (read while it runs)."""

    def __init__(self, data_dir: Path, log: Path, **env: str) -> None:
        self.log_path = log
        full_env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "GOUACHE_WORKER__ENGINE": "tests.support.engines:TimedEngine",
            "GOUACHE_WORKER__POLL_SECONDS": "0.1",
            "GOUACHE_WORKER__HEARTBEAT_SECONDS": "0.3",
            "GOUACHE_WORKER__PROGRESS_INTERVAL_SECONDS": "0.1",
            "GOUACHE_WORKER__LEASE_SECONDS": "3",
            **env,
        }
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gouache", "run", "--port", "0", "--data-dir", str(data_dir)],
            cwd=REPO, env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.base = ""

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text())
            if found:
                return found
            if self.process.poll() is not None:
                raise AssertionError(f"service exited {self.process.returncode}:\n{self.text()}")
            time.sleep(0.1)
        raise AssertionError(f"{pattern!r} not logged within {timeout}s:\n{self.text()}")

    def start(self) -> Service:
        port = self.wait_for_log(r"web playground: http://127\.0\.0\.1:(\d+)/").group(1)
        self.base = f"http://127.0.0.1:{port}"
        self.wait_for_log(r"worker \S+ ready")
        return self

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                raw = response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode()

    def wait_job(self, job_id: str, states: tuple[str, ...], timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, job = self.call("GET", f"/api/jobs/{job_id}")
            if status == 200 and job["status"] in states:
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} never reached {states}:\n{self.text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()


def _samples(text: str) -> dict[str, float]:
    return {
        name: float(value)
        for line in text.splitlines()
        if line and not line.startswith("#") and "{" not in line
        for name, value in [line.rsplit(" ", 1)]
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie is not alive
        return fh.read().split()[2] != "Z"


def test_run_serves_reports_metrics_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    # One test client sends a burst of six jobs: it is one web identity (signed cookies), so
    # its own and the web group's buckets must hold the burst.
    service = Service(tmp_path / "data", tmp_path / "run.log", GOUACHE_ADMISSION__BURST="50",
                      GOUACHE_WEB__GROUP_BURST="50").start()
    try:
        log = service.text()
        assert "Discord: disabled, no GOUACHE_DISCORD__TOKEN" in log
        assert "Slack: disabled, no GOUACHE_SLACK__BOT_TOKEN" in log
        assert "storage: sqlite:///" in log
        ids = []
        for i in range(6):  # a burst: batches of up to 8 images form from the queue
            status, body = service.call("POST", "/api/jobs", {"command": f"/imagine fox {i} --n 2"})
            assert status == 202, body
            ids.append(body["id"])
        for job_id in ids:
            assert service.wait_job(job_id, ("succeeded",))["progress"] == 1
        for job_id in ids:
            service.wait_for_log(f"delivered job {job_id} to web", timeout=10)
        assert service.call("GET", "/healthz")[0] == 200
        status, text = service.call("GET", "/metrics")
        values = _samples(text)
        assert values["gouache_batch_size_images_sum"] == 12
        assert values["gouache_batch_size_images_count"] >= 2
        assert values["gouache_queue_wait_seconds_count"] == 6
        assert values["gouache_images_generated_total"] == 12
        worker_pid = int(service.wait_for_log(r"started child process (\d+)").group(1))
    finally:
        code = service.stop()
    assert code == 0, service.text()
    log = service.text()
    assert log.index("admission closed") < log.index("worker: stopped") < log.index("stopped\n", log.index("worker: stopped"))
    assert not _alive(worker_pid)


def test_off_loopback_without_a_token_generates_one_instead_of_exiting(tmp_path: Path) -> None:
    # It used to exit 2, which restart-looped the container (tests/integration/test_container_start.py).
    service = Service(tmp_path / "data", tmp_path / "run.log", GOUACHE_HOST="0.0.0.0")
    try:
        service.wait_for_log(r"web playground: http://0\.0\.0\.0:\d+/ \(token required\)")
        token = (tmp_path / "data" / "web-token").read_text().strip()
        assert service.text().count(f"  token: {token}") == 1
    finally:
        assert service.stop() == 0, service.text()


def test_a_job_running_when_the_service_is_killed_is_delivered_once_after_restart(
    tmp_path: Path,
) -> None:
    slow = {"GOUACHE_TEST_BATCH_A": "4"}  # long enough to kill the service mid-batch
    first = Service(tmp_path / "data", tmp_path / "first.log", **slow).start()
    status, body = first.call("POST", "/api/jobs", {"command": "/imagine a lighthouse --n 2"})
    assert status == 202, body
    job_id = body["id"]
    first.wait_job(job_id, ("running",))
    worker_pid = int(first.wait_for_log(r"started child process (\d+)").group(1))
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    assert f"delivered job {job_id}" not in first.text()

    # The orphaned worker is told to stop (parent-death signal): it finishes or re-queues.
    deadline = time.monotonic() + 30
    while _alive(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(worker_pid)

    second = Service(tmp_path / "data", tmp_path / "second.log").start()
    try:
        job = second.wait_job(job_id, ("succeeded",))
        assert sorted(a["kind"] for a in job["artifacts"]) == ["image", "image"]
        second.wait_for_log(f"delivered job {job_id} to web", timeout=15)
        time.sleep(1.5)  # several more delivery passes
    finally:
        assert second.stop() == 0
    assert second.text().count(f"delivered job {job_id}") == 1


def test_sigterm_lets_the_running_batch_finish_and_delivers_it(tmp_path: Path) -> None:
    service = Service(tmp_path / "data", tmp_path / "run.log", GOUACHE_TEST_BATCH_A="3").start()
    status, body = service.call("POST", "/api/jobs", {"command": "/imagine a lighthouse"})
    assert status == 202, body
    service.wait_job(body["id"], ("running",))
    service.process.send_signal(signal.SIGTERM)
    service.wait_for_log("admission closed")
    assert service.stop(timeout=60) == 0
    log = service.text()
    # The worker finished its batch before exiting, and the final pass delivered the result.
    assert log.index("running batch: 1 job(s)") < log.index("worker: stopped (exit code 0)")
    assert log.count(f"delivered job {body['id']} to web (succeeded)") == 1


def test_a_worker_child_that_dies_is_restarted_and_work_goes_on(tmp_path: Path) -> None:
    # The prompt makes the fake engine raise the engine's FatalDeviceError, as a sticky CUDA
    # error would: the worker exits with EXIT_DEVICE_LOST and the supervisor starts another.
    service = Service(tmp_path / "data", tmp_path / "run.log").start()
    try:
        first = int(service.wait_for_log(r"started child process (\d+)").group(1))
        status, body = service.call("POST", "/api/jobs", {"command": "/imagine sticky-cuda now"})
        assert status == 202, body
        service.wait_for_log(r"child exited with code 3", timeout=30)
        restarted = service.wait_for_log(rf"started child process (?!{first}\b)(\d+)", timeout=30)
        assert int(restarted.group(1)) != first
        status, body = service.call("POST", "/api/jobs", {"command": "/imagine a calm fox"})
        assert status == 202, body
        assert service.wait_job(body["id"], ("succeeded",), timeout=60)["status"] == "succeeded"
    finally:
        assert service.stop() == 0, service.text()
    assert not _alive(first)

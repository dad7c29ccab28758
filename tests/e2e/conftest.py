"""A real `gouache run` (default model: builtin:demo) and Debian's headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


@pytest.fixture(scope="module")
def service_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("e2e")
    log_path = tmp / "service.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOUACHE_")}
    env["HF_HUB_OFFLINE"] = "1"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gouache", "run", "--port", "0", "--data-dir", str(tmp / "data")],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            yield _wait_for_url(process, log_path)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_for_url(process: subprocess.Popen[bytes], log_path: Path, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        found = re.search(r"web playground: (http://127\.0\.0\.1:\d+/)", text)
        if found:
            return found.group(1)
        if process.poll() is not None:
            raise AssertionError(f"gouache run exited {process.returncode}:\n{text}")
        time.sleep(0.2)
    raise AssertionError("gouache run did not start:\n" + log_path.read_text(errors="replace"))


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not shutil.which(CHROMIUM):  # `make test` installs it (scripts/test-services.sh)
        pytest.fail(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright import sync_api
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()

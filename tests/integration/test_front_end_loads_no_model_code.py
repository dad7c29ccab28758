"""`gouache run --no-worker`, the scale-out front end, never imports torch or diffusers.

The real command in a fresh interpreter: it starts, takes web requests that go through every
admission check (the prompt length on the demo model's tokenizer, a sampler name, an upload
refused), shuts down on SIGTERM, and then reports which model libraries it ever loaded.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys, threading, time, urllib.error, urllib.request
    from gouache.cli import main

    port, data = int(sys.argv[1]), sys.argv[2]
    base = f"http://127.0.0.1:{port}"
    answers = {}

    def post(command):
        body = json.dumps({"command": command}).encode()
        request = urllib.request.Request(base + "/api/jobs", body,
                                         {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def client():
        try:
            for _ in range(600):  # until the service listens
                try:
                    urllib.request.urlopen(base + "/healthz", timeout=5).close()
                    break
                except urllib.error.HTTPError:
                    break
                except OSError:
                    time.sleep(0.1)
            answers["fits"] = post("a red circle --sampler euler --steps 4")
            answers["too long"] = post(" ".join(["red"] * 40))
            answers["no upload"] = post("/depth a hill")
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=client, daemon=True).start()
    code = main(["run", "--no-worker", "--data-dir", data, "--port", str(port)])
    heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "diffusers"})
    print(json.dumps({"code": code, "answers": answers, "heavy": heavy}))
    """
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_gouache_run_no_worker_never_imports_torch_or_diffusers(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(free_port()), str(tmp_path / "data")],
        capture_output=True, text=True, cwd=ROOT, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["heavy"] == [], result.stderr[-3000:]
    answers = report["answers"]
    assert answers["fits"][0] == 202, answers
    assert answers["too long"][0] == 400
    assert "longer than this model reads (32 tokens)" in answers["too long"][1]["error"]
    assert answers["no upload"][0] == 400
    assert report["code"] == 0

"""The chaos run (benchmarks/chaos.py) in its CI size, on both backends.

Real processes on loopback: `gouache run --no-worker`, two `gouache worker`s on the timed fake
engine, web and signed Slack submissions (some re-sent by "Slack"), worker SIGKILLs aimed at
claiming and mid-step, the service SIGKILLed and started again, ``pg_terminate_backend``
(PostgreSQL; the server restart is for the full run only), and one poison job. The verdict
comes from the database and the fake Slack: nothing lost, nothing posted twice, the poison job
dead after exactly ``max_attempts``, nothing stuck, no secret in any DEBUG log line.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.chaos, pytest.mark.timeout(420)]


def _chaos():
    spec = importlib.util.spec_from_file_location("gouache_chaos_benchmark", REPO / "benchmarks" / "chaos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


async def test_the_ci_chaos_run_keeps_every_invariant(backend: str, tmp_path: Path) -> None:
    chaos = _chaos()
    if backend == "postgres":
        assert not chaos.CI.pg_restart  # the shared server is restarted by the full run only
    figures = await chaos.run_backend(chaos.CI, backend, tmp_path / "chaos")
    assert figures["passed"], "\n".join(figures.get("problems", [])) + f"\n{figures}"
    assert figures["jobs_lost"] == 0 and figures["duplicate_posts"] == 0
    assert figures["duplicate_artifacts"] == 0 and figures["stuck_jobs"] == 0
    assert figures["secrets_found"] == 0
    assert figures["poison_dead_after_max_attempts"]
    assert figures["worker_kills"] >= chaos.CI.worker_kills
    assert len(figures["service_restarts"]) == chaos.CI.service_restarts
    assert figures["slack_retries_sent"] > 0 and figures["ack_p99_s"] < chaos.ACK_TARGET_S
    if backend == "postgres":
        assert figures["pg_backends_terminated"] > 0

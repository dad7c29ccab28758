"""A scale-down in the middle of a busy batch, with real `gouache worker` processes on PostgreSQL.

The scenario is ``benchmarks/scale_down.py`` (which writes its figures to
``benchmarks/results/scale_down.json``); here its figures go to the test's output and the
invariants are asserted: nothing lost, nothing stored twice, the hand-back counts no attempt,
the worker exits 0, and every lane it could not finish ran again on the other worker.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import asyncpg
import pytest

from tests.integration.conftest import TABLES

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(240)]


def _benchmark():
    spec = importlib.util.spec_from_file_location("gouache_scale_down", REPO / "benchmarks" / "scale_down.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_a_worker_scaled_away_mid_batch_loses_and_duplicates_nothing(pg_url, tmp_path):
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(f"TRUNCATE {TABLES} CASCADE")
    finally:
        await conn.close()
    figures = await _benchmark().scale_down(pg_url, tmp_path / "scale-down")
    print(json.dumps(figures, indent=2))
    assert figures["leaving_exit_code"] == 0
    assert figures["jobs_lost"] == 0 and figures["missing_artifacts"] == 0
    assert figures["duplicate_artifacts"] == 0
    assert figures["released_attempts_counted"] == 0
    assert figures["held_by_leaving_at_sigterm"] == 8
    assert figures["released_and_rerun"] + figures["finished_by_leaving"] == 8
    assert figures["released_and_rerun"] > 0  # its lanes needed longer than drain_seconds

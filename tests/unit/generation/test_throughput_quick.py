"""benchmarks/throughput.py --quick runs end to end and reports every figure per contender."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
FIGURES = {"images_per_s", "row_steps_per_s", "mean_rows_per_call", "wait_p50_s", "wait_p95_s",
           "slowdown_p95", "jain_image_steps", "gif_tax", "latencies_s"}  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_benchmark_writes_every_figure(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GOUACHE_BENCH_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--quick", "--out", str(tmp_path)],
        check=True, env=env, cwd=ROOT, timeout=850,
    )  # fmt: skip
    report = json.loads((tmp_path / "throughput-quick.json").read_text())
    assert report["mode"] == "quick" and report["machine"]["cpus"]
    assert report["offline_batch32_images_per_s"] > 0
    for workload in ("uniform", "mixed"):
        data = report["workloads"][workload]
        assert data["capacity_images_per_s"] > 0
        scenarios = data["scenarios"]
        assert set(scenarios) == {"burst", "closed", "poisson50", "poisson80", "poisson95", "heavy"}
        for name, per in scenarios.items():
            assert sorted(per["order"]) == ["request", "sequential", "step"]
            for contender in ("sequential", "request", "step"):
                row = per[contender]
                assert set(row) >= FIGURES, (name, contender)
                assert row["unet_calls"] > 0 and 0 < row["jain_image_steps"] <= 1
        burst = scenarios["burst"]
        assert all(burst[c]["completed"] == burst[c]["requests"] for c in ("sequential", "request", "step"))
        # Step-level batching packs more rows into a UNet call than one request at a time does.
        assert burst["step"]["mean_rows_per_call"] > burst["sequential"]["mean_rows_per_call"]
    assert (tmp_path / "throughput-quick.md").read_text().startswith("# Throughput (quick)")
    assert (tmp_path / "throughput-quick.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(report["targets"]) >= {"closed_uniform_step_over_sequential", "heavy_jain"}

"""benchmarks/gpu_check.py --dry-run: every step of the GPU check wired, on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_gpu_check_dry_run_passes_every_step(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--out", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["device"] == "cpu (dry run)" and report["ok"]
    steps = report["steps"]
    assert {"loop:sd", "loop:sdxl", "loop:sd-file", "loop:sdxl-file", "vae-overflow", "oom-sites"} <= set(steps)
    assert steps["vae-overflow"]["not_black"] and steps["vae-overflow"]["vae_dtype_after"] == "torch.float32"
    assert len([k for k in steps["oom-sites"] if ":" in k]) == 8

"""benchmarks/speed.py --quick runs end to end: every contender measured, results comparable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_speed_benchmark_measures_every_option(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GOUACHE_BENCH_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--quick", "--threads", "1",
         "--out", str(tmp_path)],
        check=True, env=env, cwd=ROOT, timeout=280,
    )  # fmt: skip
    report = json.loads((tmp_path / "speed-quick.json").read_text())
    assert report["mode"] == "quick" and report["machine"]["cpus"]
    assert set(report["unet"]) == {"eager", "channels_last", "bf16", "classic_attention"}
    for name, fig in report["unet"].items():
        assert set(fig["ms_per_call"]) == {"1", "8"} and all(v > 0 for v in fig["ms_per_call"].values())
        # fp32 options keep the numbers; bf16 is the one that moves them visibly.
        limit = 0.1 if name == "bf16" else 1e-4
        assert fig["max_abs_diff_vs_eager"] <= limit, name
    assert report["unet"]["eager"]["speedup_vs_eager"] == {"1": 1.0, "8": 1.0}
    running = report["running"]
    assert set(running) == {"eager", "channels_last", "batched_steps", "shipped_defaults"}
    assert all(fig["images_per_s"] > 0 and fig["runs"] == 1 for fig in running.values())
    assert running["shipped_defaults"]["options"]["batched_steps"] is True
    assert (tmp_path / "speed-quick.md").read_text().count("| eager |") == 2


def test_compile_on_is_refused_clearly_where_no_c_compiler_exists(monkeypatch):
    import shutil

    import pytest
    import torch

    from gouache.config import Speed
    from gouache.errors import CompileError
    from gouache.generation.loop.speed import resolve_speed

    found = {"gcc"}  # a C compiler but no C++ one
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}" if name in found else None)
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    # On the CPU, Inductor's kernels are C++.
    with pytest.raises(CompileError, match=r'compile = "on" cannot work.*no C\+\+ compiler \(g\+\+\)'):
        resolve_speed(Speed(compile="on"))
    found = {"g++"}
    assert resolve_speed(Speed(compile="on")).compile is True
    # On CUDA, Triton builds its launchers with a C compiler.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(CompileError, match=r'compile = "on" cannot work.*no C compiler'):
        resolve_speed(Speed(compile="on"))
    found = set()
    assert resolve_speed(Speed(compile="auto")).compile is False  # auto never needs one

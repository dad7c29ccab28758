"""`gouache evaluate` / `python -m tools.evaluate` in a small configuration on builtin:demo."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def test_a_small_evaluation_writes_the_table_json_and_plot(tmp_path: Path) -> None:
    from tools.evaluate import main

    assert main(["--samplers", "ddim,euler", "--steps", "2,4", "--n", "6", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "samplers.json").read_text())
    assert [(r["sampler"], r["steps"]) for r in report["rows"]] == [
        ("ddim", 2), ("ddim", 4), ("euler", 2), ("euler", 4)]
    for row in report["rows"]:
        assert row["fid_clip"] >= 0 and 0 <= row["judge_accuracy"]["mean"] <= 1
        assert set(row["judge_accuracy"]) == {"colour", "shape", "background", "mean"}
    floor = report["rendered_floor"]
    assert floor["judge_accuracy"]["mean"] > 0.8  # renders: the judge reads them
    # more steps draw the world better than two
    assert report["rows"][1]["fid_clip"] < report["rows"][0]["fid_clip"]
    table = (tmp_path / "samplers.md").read_text()
    assert "| ddim | 4 |" in table and "renders (floor)" in table
    plot = Image.open(tmp_path / "samplers.png")
    assert plot.size == (720, 440)

    # --resume keeps finished cells: only the new one is computed
    assert main(["--samplers", "ddim", "--steps", "2,4,6", "--n", "6", "--out", str(tmp_path), "--resume"]) == 0
    again = json.loads((tmp_path / "samplers.json").read_text())
    assert again["rows"][:2] == report["rows"][:2] and again["rows"][2]["steps"] == 6


def test_a_failing_sampler_is_a_row_not_a_crash() -> None:
    from tools.evaluate import draw_plot, markdown_table

    acc = {"colour": 1.0, "shape": 1.0, "background": 1.0, "mean": 1.0}
    report = {"model": "builtin:demo", "n": 4, "prompts": 4, "guidance": 2.0, "size": "32x32",
              "features": "f", "rendered_floor": {"fid_clip": 0.01, "kid_clip": 0.0, "judge_accuracy": acc},
              "rows": [{"sampler": "ddim", "steps": 10, "fid_clip": 0.1, "kid_clip": 0.0,
                        "judge_accuracy": acc, "seconds_per_image": 0.1},
                       {"sampler": "dpmpp-2m-karras", "steps": 25, "error": "IndexError: index 26"}]}  # fmt: skip
    assert "failed: IndexError" in markdown_table(report)
    assert draw_plot(report).size == (720, 440)


def test_gouache_evaluate_runs_the_tools_module(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    from gouache import cli

    seen = {}

    def call(args, cwd, env):  # noqa: ANN001
        seen.update(args=args, cwd=cwd, pythonpath=env["PYTHONPATH"])
        return 0

    monkeypatch.setattr(subprocess, "call", call)
    assert cli.main(["evaluate", "--samplers", "ddim", "--n", "8"]) == 0
    assert seen["args"][1:] == ["-m", "tools.evaluate", "--samplers", "ddim", "--n", "8"]
    assert (Path(seen["cwd"]) / "tools" / "evaluate.py").is_file()

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


def test_a_small_evaluation_writes_the_table_json_and_plot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tools.evaluate import INCEPTION_ENV, main

    monkeypatch.delenv(INCEPTION_ENV, raising=False)

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
    # no Inception weights: said in words, no columns and no zeros standing in for figures
    assert report["inception"] is None and not any("fid_inception" in r for r in report["rows"])
    assert "Inception features were not configured" in table and "FID (Inception)" not in table
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


def _random_inception(path: Path) -> Path:
    """A randomly initialised torchvision inception_v3 state dict, its batch-norm statistics
    taken from a few noise images (so its features are of a sane scale)."""
    import torch
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    model = inception_v3(weights=None, aux_logits=True, init_weights=False)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # a plain average over the calibration batch
    with torch.no_grad():
        model.train()(torch.rand(4, 3, 299, 299) * 4 - 2)
    torch.save(model.state_dict(), path)
    return path


def test_inception_features_when_weights_are_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import math

    from tools.evaluate import (
        INCEPTION_ENV,
        Inception,
        _renders,
        _scenes_and_prompts,
        frechet_low_rank,
        main,
    )

    weights = _random_inception(tmp_path / "inception.pth")
    monkeypatch.setenv(INCEPTION_ENV, str(weights))  # the setting; --inception overrides it
    out = tmp_path / "out"
    assert main(["--samplers", "ddim", "--steps", "1,4", "--n", "4", "--out", str(out)]) == 0
    report = json.loads((out / "samplers.json").read_text())
    assert report["inception"]["weights"] == str(weights) and len(report["inception"]["sha256"]) == 64
    rows = report["rows"]
    for row in [*rows, report["rendered_floor"]]:
        assert math.isfinite(row["fid_inception"]) and math.isfinite(row["kid_inception"])
        assert row["fid_inception"] > 0
    assert rows[0]["fid_inception"] != rows[1]["fid_inception"]  # 1 step vs 4 steps
    assert rows[0]["kid_inception"] != rows[1]["kid_inception"]
    table = (out / "samplers.md").read_text()
    assert "| FID (Inception) | KID (Inception) |" in table and "not configured" not in table
    assert f"{rows[1]['fid_inception']:.3f}" in table
    assert Image.open(out / "samplers.png").size == (720, 880)  # a second panel

    # with those features, the renders against themselves are ~0; against other renders not
    scenes, _ = _scenes_and_prompts(4)
    features = Inception(weights).features(_renders(scenes, 0))
    assert features.shape == (4, 2048)
    other = Inception(weights).features(_renders(scenes, 4))
    assert abs(frechet_low_rank(features, features)) < 1e-9 * frechet_low_rank(features, other)


def test_the_sample_space_fid_equals_the_covariance_one() -> None:
    import math

    import numpy as np

    from tools.demo.metrics import frechet_distance
    from tools.evaluate import frechet_low_rank

    rng = np.random.default_rng(0)
    for m, n, d in ((10, 12, 64), (100, 80, 20)):  # fewer images than dimensions, and more
        a, b = rng.normal(size=(m, d)), rng.normal(size=(n, d)) * 1.5 + 0.3
        # (the eigen-decomposition loses ~1e-8 on rank-deficient covariances: sqrt of round-off)
        assert math.isclose(frechet_low_rank(a, b), frechet_distance(a, b), rel_tol=1e-6)


def test_bad_inception_weights_are_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    from tools.evaluate import main

    def run(path: Path) -> str:
        assert main(["--samplers", "ddim", "--n", "4", "--out", str(tmp_path), "--inception", str(path)]) == 2
        return capsys.readouterr().err

    assert "no file at" in run(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    assert "is not a PyTorch state dict" in run(tmp_path / "junk.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    assert "holds a list, not a state dict" in run(tmp_path / "list.pth")
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pth")
    err = run(tmp_path / "other.pth")
    assert "not a torchvision inception_v3 state dict" in err and "missing keys" in err
    assert "unexpected keys (e.g. conv.weight)" in err
    assert not (tmp_path / "samplers.json").exists()  # refused before any work

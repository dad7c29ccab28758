"""`gouache diversity PROMPT --n 8 [--enlarge [METHOD]] -o out/` on both builtin models."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from gouache.cli import main

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)  # shared machines: tiny models run fine on one core


@pytest.mark.slow
@pytest.mark.timeout(1200)  # 8 images (and 8 or 16 more to enlarge) on a busy 2-core CPU
@pytest.mark.parametrize(
    ("model", "prompt", "enlarge"),
    [("builtin:tiny", "a lighthouse", "variants"),
     ("builtin:demo", "a large red circle in the center on a plain blue background", "cads"),
     ("builtin:demo", "a small green star at the left on a striped yellow background", "")],
)  # fmt: skip
def test_cli_prints_the_report_and_writes_images_and_composite(
    model: str, prompt: str, enlarge: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["diversity", *prompt.split(), "--n", "8", "--seed", "5", "--model", model,
            "--data-dir", str(tmp_path / "data"), "-o", str(out)]  # fmt: skip
    if enlarge:
        argv += ["--enlarge", enlarge]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "distinct of 8" in printed and "verdict:" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["images"] == 8 and report["summary"] in printed
    images = sorted(out.glob("image-*.png"))
    assert len(images) == 8
    with Image.open(out / "report.png") as composite:
        assert composite.width > 400
    if enlarge:
        assert report["enlarge"] == enlarge and "->" in printed
        assert sorted(p.name for p in (out / "baseline").glob("*.png")) == sorted(f"image-{i}.png" for i in range(8))
        if enlarge == "cads":  # same seeds as the baseline
            for index, path in enumerate(sorted(images)):
                with Image.open(path) as image:
                    assert f"Seed: {5 + index}," in image.info["parameters"]
    else:
        assert "baseline" not in report and not (out / "baseline").exists()


def test_cli_refuses_an_unknown_method(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # As in chat: a word after --enlarge that is no method is part of the prompt, and
    # --enlarge=magic names a method that does not exist.
    assert main(["diversity", "x", "--enlarge=magic", "-o", str(tmp_path)]) == 2
    assert "--enlarge must be one of cads, variants, interval" in capsys.readouterr().err

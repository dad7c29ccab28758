"""Denoising GIFs: loop, hold the final frame, and always fit the byte cap, deterministically."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageSequence

from gouache.generation.gif import encode_gif


def grey_noise(count: int, size: int, levels: int = 16, seed: int = 0) -> list[Image.Image]:
    """Distinct noisy frames with at most ``levels`` colours, so a palette holds them exactly."""
    rng = np.random.default_rng(seed)
    step = 256 // levels
    return [
        Image.fromarray((rng.integers(0, levels, (size, size)) * step).astype(np.uint8)).convert("RGB")
        for _ in range(count)
    ]


def colour_noise(count: int, size: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(count)]


def solid_frames(count: int) -> list[Image.Image]:
    return [Image.new("RGB", (48, 32), (i * 20, 255 - i * 20, 40)) for i in range(count)]


def decoded(data: bytes) -> tuple[Image.Image, list[np.ndarray], list[int]]:
    gif = Image.open(io.BytesIO(data))
    assert gif.format == "GIF"
    pixels, durations = [], []
    for frame in ImageSequence.Iterator(gif):
        pixels.append(np.asarray(frame.convert("RGB")))
        durations.append(frame.info["duration"])
    return gif, pixels, durations


def test_loops_keeps_every_frame_and_holds_the_last() -> None:
    frames = solid_frames(12)
    gif, pixels, durations = decoded(encode_gif(frames, frame_ms=120, hold_ms=1500))
    assert gif.info["loop"] == 0
    assert len(pixels) == 12
    assert durations == [120] * 11 + [1500]
    for got, want in zip(pixels, frames, strict=True):
        assert np.array_equal(got, np.asarray(want))


def test_last_frame_equals_the_final_image_for_noisy_frames_under_the_cap() -> None:
    frames = grey_noise(10, 64)
    _, pixels, _ = decoded(encode_gif(frames))
    assert len(pixels) == 10
    assert np.array_equal(pixels[-1], np.asarray(frames[-1]))
    assert np.array_equal(pixels[0], np.asarray(frames[0]))


def test_frames_are_dropped_first_keeping_first_and_last() -> None:
    frames = grey_noise(24, 96, seed=1)
    full = encode_gif(frames)
    data = encode_gif(frames, max_bytes=len(full) * 6 // 10)
    gif, pixels, _ = decoded(data)
    assert len(data) <= len(full) * 6 // 10
    assert gif.size == (96, 96)  # not scaled: dropping frames was enough
    assert 8 <= len(pixels) < 24
    assert np.array_equal(pixels[0], np.asarray(frames[0]))
    assert np.array_equal(pixels[-1], np.asarray(frames[-1]))


@pytest.mark.parametrize("cap", [120_000, 20_000, 3_000, 300])
def test_byte_cap_is_met_for_big_noisy_frames(cap: int) -> None:
    frames = colour_noise(16, 160)
    data = encode_gif(frames, max_bytes=cap)
    assert len(data) <= cap
    gif, pixels, _ = decoded(data)
    assert gif.info["loop"] == 0 and pixels  # still a valid, looping GIF
    assert gif.size[0] == gif.size[1]  # the aspect ratio survives scaling


def test_scaling_comes_before_giving_up_frames_below_eight() -> None:
    frames = colour_noise(16, 160, seed=3)
    gif, pixels, _ = decoded(encode_gif(frames, max_bytes=120_000))
    assert len(pixels) >= 8 and gif.size[0] < 160


def test_impossible_cap_still_returns_the_last_frame_tiny() -> None:
    frames = colour_noise(4, 64, seed=2)
    gif, pixels, _ = decoded(encode_gif(frames, max_bytes=10))
    assert len(pixels) == 1 and gif.size == (1, 1)


def test_deterministic() -> None:
    frames = colour_noise(12, 96, seed=5)
    assert encode_gif(frames, max_bytes=40_000) == encode_gif(frames, max_bytes=40_000)
    assert encode_gif(frames) == encode_gif(list(frames))


def test_mixed_sizes_and_modes_take_the_final_frame_size() -> None:
    frames = [Image.new("L", (16, 16), 30), Image.new("RGBA", (32, 24), (1, 2, 3, 255)),
              Image.new("RGB", (64, 48), (200, 100, 50))]  # fmt: skip
    gif, pixels, durations = decoded(encode_gif(frames, frame_ms=50, hold_ms=0))
    assert gif.size == (64, 48) and len(pixels) == 3
    assert durations == [50, 50, 50]
    assert tuple(pixels[-1][0, 0]) == (200, 100, 50)


def test_no_frames_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="at least one frame"):
        encode_gif([])

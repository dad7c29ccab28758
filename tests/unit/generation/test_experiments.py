"""Sweeps and the forward process on the tiny and demo models, against the engine alone."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gouache.config import GifSettings, Limits, builtin_demo_spec
from gouache.generation.loop.engine import Engine
from gouache.generation.models import ModelRegistry
from gouache.request import Kind, Origin, Request
from gouache.worker.experiments import loaded_model, process_artifacts, sweep_job
from gouache.worker.jobs import batch_key_for, item_for
from gouache.worker.sweeps import cells, run_sweep

ORIGIN = Origin(platform="cli", request_id="r", user="u")
GIF = GifSettings()
LIMITS = Limits()


def tiny_request(**kw) -> Request:
    base = dict(kind=Kind.IMAGINE, prompt="a red cat", origin=ORIGIN, model="builtin:tiny",
                width=64, height=64, steps=3, guidance=5.0, sampler="ddim", seed=7)  # fmt: skip
    return Request(**{**base, **kw})


def alone(engine, request: Request):
    """The cell generated on its own, like any request."""
    [result] = engine.generate(batch_key_for(request), [item_for("x", request, [], LIMITS, GIF)])
    assert result.ok
    return result.images[0]


def test_cells_are_row_major_with_the_first_axis_along_the_columns() -> None:
    request = tiny_request(sweep=(("cfg", ("3", "7")), ("steps", ("2", "4", "6"))), prompt="a {} cat")
    got = cells(request)
    assert [c.labels for c in got] == [("3", "2"), ("7", "2"), ("3", "4"), ("7", "4"), ("3", "6"), ("7", "6")]
    assert [(c.request.guidance, c.request.steps) for c in got][:3] == [(3.0, 2), (7.0, 2), (3.0, 4)]
    assert all(c.request.sweep == () and c.request.seed == 7 for c in got)
    sized = cells(tiny_request(sweep=(("size", ("64x64", "96x64")), ("prompt", ("red", "blue"))),
                               prompt="a {} cat"))  # fmt: skip
    assert [(c.request.width, c.request.prompt) for c in sized] == [
        (64, "a red cat"), (96, "a red cat"), (64, "a blue cat"), (96, "a blue cat")]


def _float_engine(registry, float_engine_cls, float_running_cls):
    """An engine whose calls and running batches both hand back float [0, 1] images."""
    return float_engine_cls(registry)


def _counting_unet_calls(registry, model: str = "builtin:tiny"):
    calls: list[int] = []
    unet = registry.get(model).denoiser
    handle = unet.register_forward_pre_hook(lambda _m, args: calls.append(len(args[0])))
    return calls, handle


def test_a_3x3_sweep_equals_its_cells_generated_one_by_one(
    registry, float_engine_cls, float_running_cls
) -> None:
    """cfg x seed: all nine cells are lanes of one running batch, no engine call of their own;
    each equals the cell made alone (float images, the parity tolerance)."""
    engine = _float_engine(registry, float_engine_cls, float_running_cls)
    calls = []
    generate = engine.generate

    def counting(key, items, *args):
        calls.append(len(items))
        return generate(key, items, *args)

    engine.generate = counting
    request = tiny_request(sweep=(("cfg", ("3", "5", "7")), ("seed", ("1", "2", "3"))))
    item = lambda i, r: item_for(i, r, [], LIMITS, GIF)  # noqa: E731
    progress = []
    sweep_cells, results = run_sweep(
        engine, "job", request, item, row_budget=18,
        on_step=lambda done, total: progress.append((done, total)),
    )  # fmt: skip
    assert calls == []  # the running batch, not engine calls
    assert progress[-1] == (27, 27) and progress == sorted(progress)
    engine.generate = generate
    for cell, stepped in zip(sweep_cells, results, strict=True):
        made_alone = alone(engine, cell.request)
        assert np.abs(stepped.images[0] - made_alone).max() < 1e-4


def test_a_3x3_cfg_by_steps_sweep_shares_unet_calls(
    registry, float_engine_cls, float_running_cls
) -> None:
    """Nine cells with nine (cfg, steps) pairs, one shape: one denoiser call per step of the
    longest cell while every lane fits the budget, instead of cells x steps calls alone."""
    engine = _float_engine(registry, float_engine_cls, float_running_cls)
    request = tiny_request(sweep=(("cfg", ("3", "5", "7")), ("steps", ("2", "3", "4"))))
    item = lambda i, r: item_for(i, r, [], LIMITS, GIF)  # noqa: E731
    calls, handle = _counting_unet_calls(registry)
    try:
        sweep_cells, results = run_sweep(engine, "job", request, item, row_budget=18)
        stepped_calls, calls[:] = len(calls), []
        # the default budget (16 rows: eight CFG lanes) still shares, in two waves
        budget_16 = run_sweep(engine, "job", request, item)[1]
        default_calls = len(calls)
    finally:
        handle.remove()
    alone_calls = 3 * (2 + 3 + 4)
    assert stepped_calls == 4  # all nine cells, 18 rows, in every call until the 4-step row ends
    assert stepped_calls < default_calls < alone_calls
    for cell, a, c in zip(sweep_cells, results, budget_16, strict=True):
        made_alone = alone(engine, cell.request)
        for result in (a, c):
            assert result.ok and np.abs(result.images[0] - made_alone).max() < 1e-4


def test_sweep_job_posts_a_labelled_grid_and_the_cells(registry) -> None:
    request = tiny_request(sweep=(("steps", ("2", "3", "4")), ("sampler", ("ddim", "euler", "pndm"))))
    result, artifacts = sweep_job(Engine(registry), "job", request, [], LIMITS, GIF)
    assert result.ok and len(result.images) == 9
    names = [a.name for a in artifacts]
    assert names[0] == "grid.png" and names[1:] == [f"image-{k}.png" for k in range(9)]
    grid = Image.open(io.BytesIO(artifacts[0].data))
    assert grid.width >= 3 * 128 and grid.height >= 3 * 128  # 64px cells scaled up, plus labels
    assert "Sweep: steps=2,3,4; sampler=ddim,euler,pndm" in grid.info["parameters"]
    cell5 = Image.open(io.BytesIO(artifacts[1 + 5].data))
    assert "Steps: 4, Sampler: euler" in cell5.info["parameters"]
    # the edges carry labels: the top-left corner (label area) is not blank, the cells sit right
    corner = np.asarray(grid.convert("L"))[:40, : grid.width // 3]
    assert (corner < 128).any()


@pytest.fixture(scope="module")
def demo_registry(tmp_path_factory) -> ModelRegistry:
    return ModelRegistry({"builtin:demo": builtin_demo_spec()}, cache_dir=tmp_path_factory.mktemp("d"),
                         device="cpu")  # fmt: skip


def test_a_3x3_sweep_on_the_demo_model_equals_the_images_made_alone(demo_registry) -> None:
    engine = Engine(demo_registry)
    request = Request(kind=Kind.IMAGINE, prompt="a red circle in the center on a plain blue background",
                      origin=ORIGIN, model="builtin:demo", width=32, height=32, steps=4, guidance=2.0,
                      sampler="ddim", seed=3,
                      sweep=(("cfg", ("1.5", "2", "3")), ("seed", ("1", "2", "3"))))  # fmt: skip
    result, artifacts = sweep_job(engine, "job", request, [], LIMITS, GIF)
    assert result.ok
    for cell, image in zip(cells(request), result.images, strict=True):
        diff = np.abs(np.asarray(image, np.int16) - np.asarray(alone(engine, cell.request), np.int16))
        assert diff.max() <= 1 and diff.mean() < 0.05  # batched rows vs alone: float rounding only


def test_process_goes_up_to_pure_noise_in_the_middle_and_ends_on_the_image(registry) -> None:
    from gouache.generation.experiments.noising import process_frames

    engine = Engine(registry)
    request = tiny_request(process=True, steps=4)
    item = item_for("p", request, [], LIMITS, GIF)
    assert item.frames_every == 1
    [result] = engine.generate(batch_key_for(request), [item])
    model = loaded_model(engine, "builtin:tiny")
    story = process_frames(model, result.images[0], result.frames[0], sampler="ddim", steps=4,
                           every=1, seed=request.seed)  # fmt: skip
    middle = len(story.frames) // 2
    assert len(story.frames) == 9 and story.timesteps[middle] == max(story.timesteps)
    assert story.timesteps[0] == story.timesteps[-1] == 0
    assert story.timesteps[: middle + 1] == sorted(story.timesteps[: middle + 1])  # noised, step by step
    assert story.frames[-1] is result.images[0]
    final = np.asarray(result.images[0], np.float32)

    artifacts = process_artifacts("p", request, result, model, GIF)
    assert [a.name for a in artifacts] == ["process.gif", "process-strip.png"]
    gif = Image.open(io.BytesIO(artifacts[0].data))
    assert gif.n_frames == 9
    gif.seek(8)
    assert np.abs(np.asarray(gif.convert("RGB"), np.int16) - final.astype(np.int16)).mean() < 8  # palette


def test_generate_cli_writes_the_grid_cells_and_process(tmp_path: Path, tiny_model_dir: Path) -> None:
    from gouache.config import Settings
    from gouache.generate import generate_to_dir

    (tmp_path / "data" / "models").mkdir(parents=True)
    (tmp_path / "data" / "models" / "builtin-tiny").symlink_to(tiny_model_dir)
    settings = Settings(data_dir=tmp_path / "data", default_model="builtin:tiny")
    written = generate_to_dir(settings, "a {} cat --steps 2 --sweep prompt=red,blue --sweep cfg=3,7",
                              tmp_path / "sweep")  # fmt: skip
    # the web API's names (one vocabulary everywhere)
    assert sorted(p.name for p in written) == ["grid.png", "image-0.png", "image-1.png", "image-2.png", "image-3.png"]
    written = generate_to_dir(settings, "a cat --steps 3 --process --seed 5", tmp_path / "process")
    assert {p.name for p in written} == {"image-0.png", "process.gif", "process-strip.png"}


def test_sweep_cells_charge_as_images() -> None:
    request = tiny_request(sweep=(("cfg", ("3", "5", "7")), ("seed", ("1", "2", "3"))))
    assert request.images == 9 and replace(request, sweep=()).images == 1


def test_on_the_demo_model_the_middle_frame_is_the_furthest_from_the_image(demo_registry) -> None:
    """With a trained VAE the noising is visible: distance to the final image climbs to the
    middle (pure noise) and falls back to zero."""
    from gouache.generation.experiments.noising import process_frames

    engine = Engine(demo_registry)
    request = Request(kind=Kind.IMAGINE, prompt="a red circle in the center on a plain blue background",
                      origin=ORIGIN, model="builtin:demo", width=32, height=32, steps=8, guidance=2.0,
                      sampler="ddim", seed=3, process=True)  # fmt: skip
    [result] = engine.generate(batch_key_for(request), [item_for("p", request, [], LIMITS, GIF)])
    story = process_frames(loaded_model(engine, "builtin:demo"), result.images[0], result.frames[0],
                           sampler="ddim", steps=8, every=1, seed=3)  # fmt: skip
    final = np.asarray(result.images[0], np.float32)
    far = [float(np.abs(np.asarray(f, np.float32) - final).mean()) for f in story.frames]
    middle = len(far) // 2
    assert far[middle] == max(far) and far[-1] == 0.0
    assert far[1] < far[middle] / 2  # the first forward step is still mostly the image


# /interpolate ----------------------------------------------------------------------------------


def test_slerp_keeps_the_endpoints_and_the_norm() -> None:
    import torch

    from gouache.generation.experiments.interpolate import slerp, weights

    a, b = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1)), torch.randn(
        1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    assert torch.equal(slerp(a, b, 0.0), a) and torch.equal(slerp(a, b, 1.0), b)
    middle = slerp(a, b, 0.5)
    assert abs(float(middle.norm()) - float((a.norm() + b.norm()) / 2)) < 0.05 * float(a.norm())
    assert float(((a + b) / 2).norm()) < 0.8 * float(middle.norm())  # a lerp would shrink it
    assert weights(5) == [0.0, 0.25, 0.5, 0.75, 1.0]


@pytest.mark.parametrize("sampler", ["ddim", "euler-a"])  # euler-a: the step noise is seeded too
def test_interpolation_endpoints_equal_the_two_images_generated_alone(registry, float_engine_cls,
                                                                      sampler) -> None:  # fmt: skip
    from gouache.generation.experiments.interpolate import interpolate
    from gouache.generation.loop.batch import BatchItem, BatchKey

    engine = float_engine_cls(registry)
    key = BatchKey("builtin:tiny", "txt2img", 64, 64, 3, sampler, 5.0)
    batch = engine.running_batch(key.shape, row_budget=4, decode_chunk=2)  # frames in two waves
    frames = interpolate(batch, key, ("a red cat", "a blue dog"), (7, 11), 5,
                         negative_prompt="blurry")  # fmt: skip
    assert len(frames) == 5
    a, b = (engine.generate(key, [BatchItem("x", p, "blurry", seed=s)])[0].images[0]
            for p, s in (("a red cat", 7), ("a blue dog", 11)))  # fmt: skip
    assert np.abs(frames[0] - a).max() < 1e-4 and np.abs(frames[-1] - b).max() < 1e-4
    assert np.abs(frames[2] - a).max() > 1e-3 and np.abs(frames[2] - b).max() > 1e-3


def test_interpolation_frames_in_a_shared_batch_equal_the_frames_run_alone(registry, float_engine_cls,
                                                                          ) -> None:  # fmt: skip
    """The worker admits the frames beside other users' lanes (other steps, other guidance):
    each frame equals the interpolation run in a batch of its own, and so does the other lane."""
    from gouache.generation.experiments.interpolate import admit_frames, interpolate
    from gouache.generation.loop.batch import BatchItem, BatchKey

    engine = float_engine_cls(registry)
    key = BatchKey("builtin:tiny", "txt2img", 64, 64, 3, "euler-a", 5.0)
    alone = interpolate(engine.running_batch(key.shape, row_budget=16, decode_chunk=4), key,
                        ("a red cat", "a blue dog"), (7, 11), 4)  # fmt: skip
    other = BatchKey("builtin:tiny", "txt2img", 64, 64, 4, "ddim", 3.0)
    other_alone = engine.generate(other, [BatchItem("o", "a green hat", seed=5)])[0].images[0]
    shared = engine.running_batch(key.shape, row_budget=16, decode_chunk=4)
    shared.admit(BatchItem("o", "a green hat", seed=5), other.spec, user="someone else")
    ids = admit_frames(shared, key, ("a red cat", "a blue dog"), (7, 11), 4, user="u", prefix="job:frame")
    out = {}
    while len(shared):
        out.update({r.item_id: r.images[0] for r in shared.step()})
    assert ids == [f"job:frame-{k}" for k in range(4)]
    for k, frame in enumerate(alone):
        assert np.abs(out[ids[k]] - frame).max() < 1e-4
    assert np.abs(out["o"] - other_alone).max() < 1e-4


def test_interpolate_job_posts_a_looping_gif_a_strip_and_the_endpoints(registry) -> None:
    from gouache.worker.experiments import experiment_job

    request = tiny_request(kind=Kind.INTERPOLATE, prompt="a red cat", prompt_b="a blue dog", seed_b=11,
                           frames=4, steps=2)  # fmt: skip
    assert request.images == 4
    result, artifacts = experiment_job(Engine(registry), "j", request, [], LIMITS, GIF)
    assert result.ok and len(result.images) == 4
    assert [a.name for a in artifacts] == ["interpolation.gif", "strip.png", "image-0.png", "image-3.png"]
    gif = Image.open(io.BytesIO(artifacts[0].data))
    assert gif.n_frames == 4 and gif.info.get("loop") == 0
    end = Image.open(io.BytesIO(artifacts[3].data))
    assert "a blue dog" in end.info["parameters"] and "Seed: 11" in end.info["parameters"]
    assert np.array_equal(np.asarray(end.convert("RGB")), np.asarray(result.images[3].convert("RGB")))


def test_a_depth_strength_sweep_on_a_photo_estimates_its_depth_once(registry) -> None:
    from gouache.storage.jobs import Artifact, ArtifactKind

    rng = np.random.default_rng(1)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(buffer, "PNG")
    upload = Artifact("job", "input-0.png", ArtifactKind.INPUT, "image/png", buffer.getvalue())
    seen = []

    class Ramp:
        name = "ramp"

        def estimate(self, photo):
            seen.append(photo.size)
            return np.tile(np.linspace(0, 1, photo.size[1])[:, None], (1, photo.size[0]))

    request = tiny_request(kind=Kind.DEPTH, prompt="a hill", steps=2, attachment="input-0.png",
                           sweep=(("strength", ("0", "1", "2")),))  # fmt: skip
    result, artifacts = sweep_job(Engine(registry), "job", request, [upload], LIMITS, GIF,
                                  estimators=lambda model: Ramp())  # fmt: skip
    assert result.ok and len(result.images) == 3
    assert seen == [(48, 48)]  # one estimate for the three cells
    first, _, last = (np.asarray(im, np.int16) for im in result.images)
    assert np.abs(first - last).mean() > 0.5  # strength 0 vs 2: the control shows


def test_the_grid_metadata_shows_the_values_its_cells_used() -> None:
    from gouache.worker.sweeps import sweep_description

    request = tiny_request(sweep=(("cfg", ("3", "7")), ("steps", ("10", "25"))), guidance=2.0, steps=20)
    text = sweep_description(request)
    assert "CFG scale: 3/7" in text and "Steps: 10/25" in text
    assert "CFG scale: 2," not in text and "Steps: 20," not in text  # no cell used those
    assert text.endswith("Sweep: cfg=3,7; steps=10,25")

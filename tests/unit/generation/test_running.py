"""RunningBatch: every item's images equal the item generated alone by Engine.generate.

Tolerance: max abs difference <= 1e-4 on float [0, 1] images (TOL). The lanes' own arithmetic
is the engine's; what differs is only the batch composition of the UNet call, which moves
float32 results by ~1e-6 on the tiny models (measured 3e-7..1e-6).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gouache.errors import InvalidRequest
from gouache.generation.loop.batch import BatchItem, BatchKey, LaneSpec, ShapeKey

TOL = 1e-4
SD = ShapeKey("builtin:tiny", 64, 64)
XL = ShapeKey("tiny-xl", 64, 64)


def depth_map(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))


def alone(engine, shape: ShapeKey, item: BatchItem, spec: LaneSpec):
    key = BatchKey(shape.model, spec.pipeline, shape.width, shape.height, spec.steps,
                   spec.sampler, spec.guidance, spec.diversify)  # fmt: skip
    (result,) = engine.generate(key, [item])
    assert result.ok
    return result


def run_all(batch, joins: dict[int, list] | None = None, stop=None) -> tuple[dict, dict]:
    """Step to the end; ``joins[k]`` are admitted before step k; returns results and the
    step at which each item came back."""
    joins = dict(joins or {})
    results, retired_at, k = {}, {}, 0
    while len(batch) or joins:
        for item, spec in joins.pop(k, []):
            batch.admit(item, spec)
        k += 1
        for result in batch.step(stop):
            results[result.item_id] = result
            retired_at[result.item_id] = k
    return results, retired_at


def assert_equal_to_alone(results, jobs, engine, shape) -> None:
    for item, spec in jobs:
        got = results[item.item_id]
        assert got.ok and len(got.images) == item.count
        solo = alone(engine, shape, item, spec)
        assert np.abs(np.stack(got.images) - np.stack(solo.images)).max() <= TOL, item.item_id
        assert len(got.frames) == len(solo.frames)
        for ours, theirs in zip(got.frames, solo.frames, strict=True):
            assert len(ours) == len(theirs)
            assert np.abs(np.stack(ours) - np.stack(theirs)).max() <= TOL


MIXED = [
    (BatchItem("a", "a red cat", "blurry", seed=1), LaneSpec(2, "ddim", 5.0)),
    (BatchItem("b", "a blue dog", seed=2, count=2), LaneSpec(3, "euler-a", 1.0)),  # no CFG
    (BatchItem("c", "a green owl", "dark", seed=3), LaneSpec(5, "dpmpp-2m-karras", 7.5)),
    (BatchItem("d", "a grey fox", seed=4), LaneSpec(3, "heun", 0.0)),  # no CFG, order 2
    (BatchItem("e", "a pink pig", seed=5, frames_every=2), LaneSpec(5, "unipc", 3.0)),
    (BatchItem("f", "a tan cow", seed=6), LaneSpec(4, "lms", 2.0, diversify=True)),
]


def test_mixed_steps_samplers_guidance_cfg_and_frames_equal_alone(
    registry, float_engine_cls, float_running_cls
):
    batch = float_running_cls(registry, SD)
    for item, spec in MIXED:
        batch.admit(item, spec)
    seen_rows = []
    results, retired_at = {}, {}
    for k in range(1, 20):
        for result in batch.step():
            results[result.item_id], retired_at[result.item_id] = result, k
        seen_rows.append((batch.stats.rows, batch.stats.denoiser_calls))
        if not len(batch):
            break
    assert_equal_to_alone(results, MIXED, float_engine_cls(registry), SD)
    # One UNet call per step over every lane: 2+2+2+1+1+2+2 rows (CFG lanes count twice).
    assert seen_rows[0] == (2 + 2 + 2 + 1 + 2 + 2, 1)
    # Lanes retire when their own steps end (heun: 2 * 3 - 1 UNet calls), not at the batch's end.
    assert retired_at == {"a": 2, "b": 3, "d": 5, "f": 4, "c": 5, "e": 5}


def test_every_row_gets_its_own_timestep_in_one_call(registry, float_running_cls, monkeypatch):
    model = registry.get("builtin:tiny")
    calls: list[torch.Tensor] = []
    real = model.denoiser.forward
    monkeypatch.setattr(
        model.denoiser, "forward", lambda sample, t, **kw: calls.append(t.clone()) or real(sample, t, **kw)
    )
    batch = float_running_cls(registry, SD)
    batch.admit(BatchItem("late", "x", seed=1), LaneSpec(4, "ddim", 5.0))
    batch.step()
    batch.admit(BatchItem("new", "y", seed=2), LaneSpec(4, "ddim", 1.0))
    batch.step()
    second = calls[1]
    assert second.ndim == 1 and len(second) == 3  # uncond + cond of "late", cond of "new"
    assert second[0] == second[1] != second[2]  # "late" is one step further than "new"


def test_lane_joining_at_step_k_and_lanes_leaving_early(
    registry, float_engine_cls, float_running_cls
):
    first = (BatchItem("first", "a red cat", seed=1, count=2), LaneSpec(5, "euler-a", 5.0))
    joiner = (BatchItem("joiner", "a blue dog", seed=2), LaneSpec(3, "dpmpp-2m", 4.0))
    quitter = (BatchItem("quitter", "a green owl", seed=3), LaneSpec(5, "ddim", 5.0))
    batch = float_running_cls(registry, SD)
    stop_at = {"k": 0}

    def should_stop(item_id: str) -> bool:
        return item_id == "quitter" and stop_at["k"] >= 3

    results, k = {}, 0
    batch.admit(*first)
    batch.admit(*quitter)
    while len(batch):
        k += 1
        stop_at["k"] = k
        if k == 3:
            batch.admit(*joiner)
        for result in batch.step(should_stop):
            results[result.item_id] = result
    assert results["quitter"].cancelled and results["quitter"].images == []
    assert_equal_to_alone(results, [first, joiner], float_engine_cls(registry), SD)


def test_cancel_drops_a_lane_at_the_next_step(registry, float_running_cls):
    batch = float_running_cls(registry, SD)
    batch.admit(BatchItem("x", "a", seed=1, count=2), LaneSpec(4, "ddim", 5.0))
    batch.admit(BatchItem("y", "b", seed=2), LaneSpec(4, "ddim", 5.0))
    batch.step()
    assert batch.stats.rows == 6
    batch.cancel("x")
    (gone,) = batch.step()
    assert gone.item_id == "x" and gone.cancelled
    assert batch.stats.rows == 2 and batch.item_ids == ["y"]


def test_depth_and_plain_rows_share_a_step_controlnet_on_its_rows(
    registry, float_engine_cls, float_running_cls, monkeypatch
):
    model = registry.get("builtin:tiny")
    rows_seen: list[tuple[int, int]] = []
    real_cn, real_unet = model.controlnet.forward, model.denoiser.forward
    monkeypatch.setattr(
        model.controlnet, "forward",
        lambda sample, *a, **kw: rows_seen.append(("cn", len(sample))) or real_cn(sample, *a, **kw),
    )  # fmt: skip
    monkeypatch.setattr(
        model.denoiser, "forward",
        lambda sample, *a, **kw: rows_seen.append(("unet", len(sample))) or real_unet(sample, *a, **kw),
    )  # fmt: skip
    jobs = [
        (BatchItem("plain", "a red cat", seed=1), LaneSpec(3, "ddim", 5.0)),
        (BatchItem("deep", "a cat", seed=2, control_image=depth_map(0)), LaneSpec(3, "euler", 5.0, "depth")),
        (BatchItem("flat", "a dog", seed=3, control_image=depth_map(1)), LaneSpec(2, "ddim", 1.0, "depth")),
    ]  # fmt: skip
    batch = float_running_cls(registry, SD)
    for job in jobs:
        batch.admit(*job)
    results, _ = run_all(batch)
    assert rows_seen[:2] == [("cn", 3), ("unet", 5)]  # ControlNet: deep's 2 rows + flat's 1
    monkeypatch.undo()
    assert_equal_to_alone(results, jobs, float_engine_cls(registry), SD)


def test_sdxl_depth_and_plain_lanes(registry, float_engine_cls, float_running_cls):
    jobs = [
        (BatchItem("p", "a red cat", "blurry", seed=3), LaneSpec(3, "euler", 5.0)),
        (BatchItem("q", "a blue dog", seed=4, control_image=depth_map(2)), LaneSpec(2, "ddim", 1.0, "depth")),
    ]  # fmt: skip
    batch = float_running_cls(registry, XL)
    results, _ = run_all(batch, {0: jobs[:1], 1: jobs[1:]})
    assert_equal_to_alone(results, jobs, float_engine_cls(registry), XL)


def test_mutation_shared_scheduler_breaks_equivalence(
    registry, float_engine_cls, float_running_cls, monkeypatch
):
    """Sharing one scheduler between lanes (no per-lane copy) must be caught by the tests."""
    import gouache.generation.loop.lanes as lanes

    jobs = [
        (BatchItem("a", "a red cat", seed=1), LaneSpec(4, "dpmpp-2m", 5.0)),
        (BatchItem("b", "a blue dog", seed=2), LaneSpec(4, "dpmpp-2m", 5.0)),
    ]
    monkeypatch.setattr(lanes, "private_scheduler", lambda template: template)
    with pytest.raises((AssertionError, IndexError)):  # wrong images, or a solver run off its end
        results, _ = run_all(float_running_cls(registry, SD), {0: jobs[:1], 1: jobs[1:]})
        monkeypatch.undo()
        assert_equal_to_alone(results, jobs, float_engine_cls(registry), SD)


def test_mutation_one_timestep_for_all_rows_breaks_equivalence(
    registry, float_engine_cls, float_running_cls, monkeypatch
):
    """Giving every row the first lane's timestep (a scalar t) must be caught too."""
    import gouache.generation.loop.running as running

    real = running.assemble

    def one_timestep(lanes, n):
        rows = real(lanes, n)
        rows.timesteps = rows.timesteps[:1].expand(len(rows.timesteps)).clone()
        return rows

    jobs = [
        (BatchItem("a", "a red cat", seed=1), LaneSpec(4, "ddim", 5.0)),
        (BatchItem("b", "a blue dog", seed=2), LaneSpec(4, "ddim", 5.0)),
    ]
    monkeypatch.setattr(running, "assemble", one_timestep)
    results, _ = run_all(float_running_cls(registry, SD), {0: jobs[:1], 2: jobs[1:]})
    monkeypatch.undo()
    with pytest.raises(AssertionError):
        assert_equal_to_alone(results, jobs, float_engine_cls(registry), SD)


def test_bad_requests_raise_at_admit_and_leave_the_batch_alone(registry, float_running_cls):
    batch = float_running_cls(registry, SD)
    batch.admit(BatchItem("ok", "a", seed=1), LaneSpec(2, "ddim", 5.0))
    with pytest.raises(InvalidRequest, match="euler-a"):
        batch.admit(BatchItem("bad", "b"), LaneSpec(2, "k_magic", 5.0))
    with pytest.raises(InvalidRequest, match="depth image"):
        batch.admit(BatchItem("nomap", "c"), LaneSpec(2, "ddim", 5.0, "depth"))
    assert batch.item_ids == ["ok"]
    (result,) = batch.run()
    assert result.ok and result.item_id == "ok"


def test_progress_and_pil_output(registry):
    from gouache.generation.loop.running import RunningBatch

    batch = RunningBatch(registry, SD)
    batch.admit(BatchItem("x", "a", seed=1, count=2), LaneSpec(3, "heun", 5.0))
    assert batch.progress() == {"x": (0, 3)}
    batch.step()
    batch.step()
    assert batch.progress() == {"x": (1, 3)}  # heun: two UNet calls per step after the first
    (result,) = batch.run()
    assert [im.size for im in result.images] == [(64, 64), (64, 64)]


def test_guidance_distilled_unet_lanes_add_no_unconditional_rows(
    tiny_model_dir, tmp_path, float_engine_cls, float_running_cls
):
    """An LCM-style UNet takes the guidance as an embedding: one row per lane, whatever scale."""
    import shutil

    from diffusers import UNet2DConditionModel

    from gouache.config import ModelSpec
    from gouache.generation.models import ModelRegistry

    target = tmp_path / "lcm"
    shutil.copytree(tiny_model_dir / "pipeline", target)
    config = dict(UNet2DConditionModel.load_config(target / "unet"))
    config["time_cond_proj_dim"] = 32
    torch.manual_seed(3)
    UNet2DConditionModel.from_config(config).save_pretrained(target / "unet")
    registry = ModelRegistry({"lcm": ModelSpec(path=str(target))}, cache_dir=tmp_path, device="cpu")
    shape = ShapeKey("lcm", 64, 64)
    jobs = [
        (BatchItem("a", "a red cat", seed=1), LaneSpec(4, "lcm", 8.0)),
        (BatchItem("b", "a blue dog", seed=2, count=2), LaneSpec(2, "lcm", 3.0)),
    ]
    batch = float_running_cls(registry, shape)
    for job in jobs:
        batch.admit(*job)
    batch.step()
    assert batch.stats.rows == 3  # no unconditional rows
    results = {r.item_id: r for r in batch.run()}
    assert_equal_to_alone(results, jobs, float_engine_cls(registry), shape)


def test_paused_lanes_resume_unchanged_when_newcomers_take_their_rows(
    registry, float_engine_cls, float_running_cls
):
    # The heavy item fills the budget alone; two users arrive at step 2 and get rows at once,
    # so heavy's lanes take turns (paused lanes keep latents, scheduler state and generator).
    heavy = (BatchItem("heavy", "a red cat", "blurry", seed=1, count=2), LaneSpec(5, "dpmpp-2m", 5.0))
    light = [
        (BatchItem("l1", "a blue dog", seed=2), LaneSpec(3, "euler-a", 4.0)),
        (BatchItem("l2", "a green owl", seed=3), LaneSpec(3, "ddim", 3.0)),
    ]
    batch = float_running_cls(registry, SD, row_budget=4)
    batch.admit(*heavy, user="h")
    batch.step()
    assert batch.stats.image_steps == {"h": 2}
    for item, spec in light:
        batch.admit(item, spec, user=item.item_id)
    results, retired_at, k = {}, {}, 1
    lanes_per_step = []
    while len(batch):
        k += 1
        for result in batch.step():
            results[result.item_id], retired_at[result.item_id] = result, k
        lanes_per_step.append(dict(batch.stats.image_steps))
    # Newcomers start level with heavy: one lane each per step, the partial pass rotating.
    assert lanes_per_step[:2] == [{"h": 1, "l1": 1}, {"l2": 1, "h": 1}]
    assert all(sum(s.values()) * 2 <= 4 for s in lanes_per_step)
    assert max(retired_at["l1"], retired_at["l2"]) < retired_at["heavy"]
    assert_equal_to_alone(results, [heavy, *light], float_engine_cls(registry), SD)


def test_a_wave_of_lanes_finishing_together_is_handed_back_in_that_step(registry, float_running_cls):
    # Six one-image requests started together finish together; decoding two per step would
    # hand the last ones back two steps late (and hold back those users' next requests).
    batch = float_running_cls(registry, SD, decode_chunk=2)
    for n in range(6):
        batch.admit(BatchItem(f"w{n}", "a red cat", seed=n), LaneSpec(3, "ddim", 1.0))
    batch.admit(BatchItem("long", "a blue dog", seed=9), LaneSpec(6, "ddim", 1.0))
    retired_at = {}
    for k in range(1, 10):
        for result in batch.step():
            retired_at[result.item_id] = k
        if k == 3:
            assert batch.stats.decoded == 6
        if not len(batch):
            break
    assert {retired_at[f"w{n}"] for n in range(6)} == {3} and retired_at["long"] == 6


def test_guidance_interval_is_applied_per_lane_in_the_step_loop(registry, float_running_cls):
    """A lane whose guidance interval excludes every step it takes is unguided (scale 1): its
    image equals the same lane with guidance 1, while a guided batch-mate is unchanged."""
    # DDIM at 4 steps visits t = 751, 501, 251, 1: none lies in the noise levels (0.9, 1.0].
    limited = BatchItem("limited", "a red cat", "blurry", seed=1, guidance_interval=(0.9, 1.0))
    guided = BatchItem("guided", "a red cat", "blurry", seed=1)
    unguided = BatchItem("unguided", "a red cat", "blurry", seed=1)
    batch = float_running_cls(registry, SD)
    batch.admit(limited, LaneSpec(4, "ddim", 7.5))
    batch.admit(guided, LaneSpec(4, "ddim", 7.5))
    batch.admit(unguided, LaneSpec(4, "ddim", 1.0))
    results, _ = run_all(batch)
    image = {key: np.stack(r.images) for key, r in results.items()}
    assert np.abs(image["limited"] - image["unguided"]).max() <= TOL
    assert np.abs(image["limited"] - image["guided"]).max() > 0.01

"""Speed options (generation/loop/speed.py): each keeps the images what eager PyTorch makes.

Batched scheduler steps are elementwise arithmetic over stacked rows, so they are held to the
images of one ``step()`` per lane within 1e-6; channels_last and the padded, compiled UNet move
float32 results by about as much as a different batch composition does (TOL of test_running).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from gouache.config import Speed
from gouache.generation.loop.batch import BatchItem, LaneSpec, ShapeKey
from gouache.generation.loop.lanes import STATELESS_SCHEDULERS
from gouache.generation.loop.speed import (
    EAGER,
    BucketedUNet,
    SpeedOptions,
    attention_report,
    ensure_sdpa,
    resolve_speed,
)
from gouache.generation.models import ModelRegistry

TOL = 1e-4
SD = ShapeKey("builtin:tiny", 64, 64)


def _registry(tiny_specs, tiny_cache_dir, **options) -> ModelRegistry:
    return ModelRegistry(tiny_specs, cache_dir=tiny_cache_dir, device="cpu",
                         speed=SpeedOptions(**options))  # fmt: skip


def _jobs() -> list[tuple[BatchItem, LaneSpec]]:
    """Lanes that share a sampler and step (grouped) beside ones that do not (stepped alone)."""
    specs = [
        ("a", LaneSpec(6, "euler-a", 5.0), 2, 0),
        ("b", LaneSpec(6, "euler-a", 1.0), 1, 2),  # no CFG, frames every 2 steps
        ("c", LaneSpec(6, "euler-a", 7.5), 1, 0),
        ("d", LaneSpec(5, "ddim", 5.0), 2, 0),
        ("e", LaneSpec(5, "ddpm", 5.0), 2, 0),
        ("f", LaneSpec(4, "euler", 3.0), 2, 0),
        ("g", LaneSpec(4, "lcm", 1.0), 2, 0),
        ("h", LaneSpec(4, "dpmpp-2m", 5.0), 2, 0),  # a multistep solver: always alone
    ]
    return [
        (BatchItem(name, f"prompt {name}", seed=10 + k, count=count, frames_every=every), spec)
        for k, (name, spec, count, every) in enumerate(specs)
    ]


def _run(registry, float_running_cls, jobs, joins_at: int = 0) -> dict:
    batch = float_running_cls(registry, SD, row_budget=64)
    results, k = {}, 0
    pending = list(jobs)
    while len(batch) or pending:
        if k >= joins_at and pending:  # the later half joins at step ``joins_at``
            for item, spec in pending[len(pending) // 2 :] if k == 0 and joins_at else pending:
                batch.admit(item, spec)
            pending = pending[: len(pending) // 2] if k == 0 and joins_at else []
        k += 1
        for result in batch.step():
            results[result.item_id] = result
    return results


def _count_steps(monkeypatch) -> dict[str, int]:
    import diffusers

    calls: dict[str, int] = {}
    for name in (*STATELESS_SCHEDULERS, "DPMSolverMultistepScheduler"):
        cls = getattr(diffusers, name)
        real = cls.step

        @functools.wraps(real)  # new_lane reads step()'s signature for eta and generator
        def step(self, *args, _real=real, _name=name, **kwargs):
            calls[_name] = calls.get(_name, 0) + 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(cls, "step", step)
    return calls


@pytest.mark.parametrize("joins_at", [0, 2])
def test_batched_scheduler_steps_equal_one_step_per_lane(
    registry, tiny_specs, tiny_cache_dir, float_running_cls, monkeypatch, joins_at
) -> None:
    calls = _count_steps(monkeypatch)
    plain = _run(registry, float_running_cls, _jobs(), joins_at)
    plain_calls = dict(calls)
    calls.clear()
    batched_registry = _registry(tiny_specs, tiny_cache_dir, batched_steps=True)
    batched = _run(batched_registry, float_running_cls, _jobs(), joins_at)
    assert set(batched) == set(plain) == {item.item_id for item, _ in _jobs()}
    worst = 0.0
    for item_id, result in plain.items():
        ours = batched[item_id]
        assert ours.ok and len(ours.images) == len(result.images)
        worst = max(worst, float(np.abs(np.stack(ours.images) - np.stack(result.images)).max()))
        for a, b in zip(ours.frames, result.frames, strict=True):
            worst = max(worst, float(np.abs(np.stack(a) - np.stack(b)).max()))
    assert worst <= 1e-6, worst
    # Grouped: euler-a's 4 lanes share 6 calls instead of 24; DDIM, DDPM, Euler, LCM pairs halve.
    assert calls["EulerAncestralDiscreteScheduler"] < plain_calls["EulerAncestralDiscreteScheduler"]
    for name in ("DDIMScheduler", "DDPMScheduler", "EulerDiscreteScheduler", "LCMScheduler"):
        assert calls[name] * 2 == plain_calls[name], name
    # A multistep solver keeps past predictions per lane: never stepped as a group.
    assert calls["DPMSolverMultistepScheduler"] == plain_calls["DPMSolverMultistepScheduler"]


def test_channels_last_keeps_the_images(
    registry, tiny_specs, tiny_cache_dir, float_running_cls
) -> None:
    fast = _registry(tiny_specs, tiny_cache_dir, channels_last=True)
    unet = fast.get("builtin:tiny").denoiser
    assert unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert not registry.get("builtin:tiny").denoiser.conv_in.weight.is_contiguous(
        memory_format=torch.channels_last
    )
    jobs = _jobs()[:4]
    plain = _run(registry, float_running_cls, jobs)
    ours = _run(fast, float_running_cls, jobs)
    for item, _ in jobs:
        diff = np.abs(np.stack(ours[item.item_id].images) - np.stack(plain[item.item_id].images))
        assert diff.max() <= TOL, item.item_id


class _Recorder:
    """A stand-in for torch.compile that records the batch sizes the compiled UNet sees."""

    def __init__(self) -> None:
        self.rows: list[int] = []

    def __call__(self, module, dynamic):
        assert dynamic is False

        def compiled(sample, timestep, **kwargs):
            self.rows.append(sample.shape[0])
            assert timestep.shape == (sample.shape[0],)
            return module(sample, timestep, **kwargs)

        return compiled


def test_bucketed_unet_pads_to_the_next_bucket_and_keeps_each_row(registry) -> None:
    unet = registry.get("builtin:tiny").denoiser
    recorder = _Recorder()
    bucketed = BucketedUNet(unet, [1, 2, 4, 8], compiler=recorder)
    assert bucketed.config is unet.config
    g = torch.Generator().manual_seed(0)
    for rows in (1, 3, 5, 8, 11):
        sample = torch.randn(rows, unet.config.in_channels, 8, 8, generator=g)
        t = torch.linspace(900, 100, rows)
        embeds = torch.randn(rows, 77, unet.config.cross_attention_dim, generator=g)
        with torch.inference_mode():
            out = bucketed(sample, t, encoder_hidden_states=embeds, return_dict=False)[0]
            ref = unet(sample, t, encoder_hidden_states=embeds, return_dict=False)[0]
        assert out.shape == ref.shape
        assert (out - ref).abs().max() <= 1e-5, rows
    # 11 rows is above the largest bucket: it ran eager, not through the compiled graph.
    assert recorder.rows == [1, 4, 8, 8]


class _Denoiser(torch.nn.Module):
    """A UNet-shaped stand-in (convolution, GroupNorm, cross-attention) that compiles fast."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 8, 3, padding=1)
        self.norm = torch.nn.GroupNorm(2, 8)
        self.attn = torch.nn.MultiheadAttention(8, 2, kdim=16, vdim=16, batch_first=True)
        self.out = torch.nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, sample, timestep, encoder_hidden_states, return_dict=True):
        h = self.norm(self.conv(sample)) * timestep.view(-1, 1, 1, 1) / 1000
        b, c, hh, ww = h.shape
        seq = h.flatten(2).transpose(1, 2)
        seq = seq + self.attn(seq, encoder_hidden_states, encoder_hidden_states)[0]
        return (self.out(seq.transpose(1, 2).reshape(b, c, hh, ww)),)


def test_torch_compile_runs_once_per_bucket_not_per_row_count() -> None:
    import torch._dynamo

    torch._dynamo.reset()
    torch.manual_seed(0)
    module = _Denoiser().eval()
    bucketed = BucketedUNet(module, [1, 4, 8])
    graphs, worst = [], 0.0
    with torch.inference_mode():
        # (rows, call form): the running batch's (a timestep per row) or the engine's
        # (integer timesteps, keywords at None or empty, or one timestep for the whole batch)
        calls = [(3, "batch"), (4, "one"), (2, "engine"), (6, "batch"), (5, "engine"),
                 (1, "batch"), (1, "one")]  # fmt: skip
        for rows, form in calls:
            sample = torch.randn(rows, 4, 8, 8)
            embeds = torch.randn(rows, 7, 16)
            t = torch.linspace(900, 100, rows).round()
            extra = {"timestep_cond": None, "added_cond_kwargs": {}} if form == "engine" else {}
            steps = t.long() if form == "engine" else t
            if form == "one":
                steps, t = t[0], t[0].expand(rows)
            got = bucketed(sample, steps, encoder_hidden_states=embeds, return_dict=False,
                           **extra)[0]  # fmt: skip
            ref = module(sample, t, encoder_hidden_states=embeds, return_dict=False)[0]
            worst = max(worst, (got - ref).abs().max().item())
            graphs.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    assert worst <= 1e-4
    # Three row counts in bucket 4 share one graph, 6 and 5 share bucket 8's, and one row fills
    # bucket 1 unpadded (an expanded timestep has stride 0), whatever the form.
    assert graphs[0] == graphs[1] == graphs[2] < graphs[3] == graphs[4] < graphs[5] == graphs[6]


def test_every_attention_layer_runs_sdpa(tiny_specs, tiny_cache_dir) -> None:
    from diffusers.models.attention_processor import AttnProcessor

    fresh = _registry(tiny_specs, tiny_cache_dir)
    model = fresh.get("builtin:tiny")
    report = attention_report(model)
    assert report["denoiser"] == report["vae"] == report["controlnet"] == "AttnProcessor2_0"
    assert report["text_encoder_0"] == "sdpa"
    model.denoiser.set_attn_processor(AttnProcessor())  # a model patched to the classic kernel
    assert attention_report(model)["denoiser"] == "AttnProcessor"
    ensure_sdpa(model)
    assert attention_report(model)["denoiser"] == "AttnProcessor2_0"


def test_auto_is_what_the_benchmark_measured_to_pay() -> None:
    auto = resolve_speed(Speed())
    assert auto == SpeedOptions(channels_last=True, compile=False, batched_steps=True)
    forced = resolve_speed(Speed(channels_last="off", compile="on", batched_steps="off",
                                 compile_buckets=[8, 1, 8]))  # fmt: skip
    assert forced == SpeedOptions(False, True, (1, 8), False)
    assert SpeedOptions() == EAGER


def test_settings_reach_the_registry(tmp_path) -> None:
    from gouache.config import Settings
    from gouache.worker.loading import build_registry

    default = build_registry(Settings(data_dir=tmp_path), device="cpu")
    assert default.speed == resolve_speed(Speed())
    chosen = build_registry(
        Settings(data_dir=tmp_path, speed={"channels_last": "off", "batched_steps": "off"}),
        device="cpu",
    )
    assert chosen.speed.channels_last is False and chosen.speed.batched_steps is False


def test_compiled_unet_sees_one_memory_format_and_timestep_layout() -> None:
    seen: list[tuple] = []

    def compiler(module, dynamic):
        def compiled(sample, timestep, **kwargs):
            residual = kwargs["down_block_additional_residuals"][0]
            seen.append((timestep.dtype, timestep.stride(), residual.is_contiguous()))
            return (sample,)

        return compiled

    bucketed = BucketedUNet(torch.nn.Identity(), [2, 4], compiler=compiler)
    for rows in (2, 3):
        sample = torch.randn(rows, 4, 8, 8)
        nhwc = torch.randn(rows, 8, 8, 8).to(memory_format=torch.channels_last)
        bucketed(sample, torch.tensor(500), down_block_additional_residuals=[nhwc],
                 cross_attention_kwargs=None)  # fmt: skip
    assert seen == [(torch.float32, (1,), True)] * 2

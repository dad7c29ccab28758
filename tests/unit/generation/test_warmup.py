"""The worker compiles its buckets at warm-up (generation/loop/warmup.py), before it claims work.

Inductor's kernels take minutes to build on these cores, so the UNet is compiled with dynamo's
``eager`` backend here: dynamo still traces one graph per bucket and call form and guards each
one, so a request whose call differs from the warm-up's in any way that matters (row count
outside the bucket, keywords, dtype, strides, latent size, ControlNet residuals) traces a new
graph, and ``unique_graphs`` counts it.
"""

from __future__ import annotations

import asyncio
import functools
import logging

import pytest
import torch

from gouache.errors import CompileError
from gouache.generation.loop.batch import BatchItem, BatchKey, LaneSpec, ShapeKey
from gouache.generation.loop.engine import Engine
from gouache.generation.loop.speed import BucketedUNet, SpeedOptions
from gouache.generation.loop.warmup import warm_rows
from gouache.generation.models import ModelRegistry

MODEL = "builtin:tiny"


def _engine(tiny_specs, tiny_cache_dir, buckets, backend) -> tuple[Engine, BucketedUNet]:
    registry = ModelRegistry({MODEL: tiny_specs[MODEL]}, cache_dir=tiny_cache_dir, device="cpu",
                             speed=SpeedOptions(compile=True, compile_buckets=buckets))  # fmt: skip
    model = registry.get(MODEL)
    assert isinstance(model.denoiser_call, BucketedUNet)  # what speed.compile = "on" puts there
    unet = BucketedUNet(model.denoiser, buckets, functools.partial(torch.compile, backend=backend),
                        name=MODEL)  # fmt: skip
    model.denoiser_call = unet
    return Engine(registry), unet


def _graphs() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def test_warm_rows_are_the_buckets_a_batch_can_reach() -> None:
    assert warm_rows((1, 2, 4, 8, 16, 32, 64), 16) == [(1, 1), (2, 2), (4, 4), (8, 8), (16, 16)]
    assert warm_rows((1, 2, 4, 8), 6) == [(1, 1), (2, 2), (4, 4), (8, 6)]  # 5-6 rows pad to 8
    assert warm_rows((4, 1), 1) == [(1, 1)]
    assert warm_rows((2, 8), 100) == [(2, 2), (8, 8)]  # more rows run the eager UNet


def test_after_warm_up_no_request_compiles(tiny_specs, tiny_cache_dir, caplog) -> None:
    torch._dynamo.reset()
    engine, unet = _engine(tiny_specs, tiny_cache_dir, (1, 2, 4), "eager")
    before = _graphs()
    with caplog.at_level(logging.INFO, logger="gouache.generation.loop.warmup"):
        engine.warm_up(MODEL, max_rows=2)  # bucket 4 cannot be met by a batch of 2 rows
    # One graph per reachable bucket, plain and with the depth ControlNet's residuals, each
    # timed in the log.
    assert _graphs() - before == 4
    for label in ("1 rows", "1 rows, depth", "2 rows", "2 rows, depth"):
        assert any(f"({label}) in" in r.getMessage() for r in caplog.records), label
    warmed = _graphs()
    spec = tiny_specs[MODEL]
    size = (spec.default_width, spec.default_height)
    # Request mode: one image with classifier-free guidance (2 rows), another sampler.
    key = BatchKey(MODEL, "txt2img", *size, 3, "euler-a", 5.0)
    assert engine.generate(key, [BatchItem("cfg", "a red fox", seed=1)])[0].ok
    # Step mode: a lane without guidance (1 row), then depth beside it (2 mixed rows: zero
    # residuals for the plain row), then depth alone (1 row).
    from PIL import Image

    depth = Image.new("RGB", size, (30, 90, 200))
    batch = engine.running_batch(ShapeKey(MODEL, *size), row_budget=2, decode_chunk=2)
    batch.admit(BatchItem("plain", "a hill", seed=2), LaneSpec(3, "ddim", 1.0))
    batch.step()
    batch.admit(BatchItem("depth", "a hill", seed=3, control_image=depth),
                LaneSpec(4, "euler", 1.0, "depth"))  # fmt: skip
    results = {r.item_id: r for r in batch.run()}
    assert results["plain"].ok and results["depth"].ok
    assert unet.failure is None
    assert _graphs() == warmed  # nothing compiled inside a request


def _failing_backend(gm, example_inputs):
    raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")


def test_a_compile_failure_at_warm_up_refuses_the_start(tiny_specs, tiny_cache_dir) -> None:
    torch._dynamo.reset()
    engine, unet = _engine(tiny_specs, tiny_cache_dir, (2,), _failing_backend)
    with pytest.raises(CompileError, match=r'compile = "on" failed compiling model .*tiny.* '
                                           r"at warm-up \(2 rows\).*No working C\+\+ compiler"):  # fmt: skip
        engine.warm_up(MODEL, max_rows=2)
    assert unet.failure is not None


def test_a_compile_failure_in_a_request_runs_the_eager_unet(
    tiny_specs, tiny_cache_dir, registry, float_engine_cls
) -> None:
    """A model first compiled inside a request: the batch gets the images eager PyTorch makes."""
    torch._dynamo.reset()
    engine, unet = _engine(tiny_specs, tiny_cache_dir, (2,), _failing_backend)
    floats = float_engine_cls(engine.registry)
    key = BatchKey(MODEL, "txt2img", 64, 64, 3, "ddim", 5.0)
    items = [BatchItem("a", "a boat", seed=5)]
    got = floats.generate(key, items)[0]
    assert got.ok and unet.failure is not None and "No working C++ compiler" in unet.failure
    want = float_engine_cls(registry).generate(key, items)[0]
    assert abs(got.images[0] - want.images[0]).max() <= 1e-5


def test_the_worker_refuses_to_start_when_compile_cannot_work(tmp_path, monkeypatch, caplog) -> None:
    from gouache.config import Settings, Speed
    from gouache.generation.loop import speed
    from gouache.worker.main import _serve

    monkeypatch.setattr(speed, "compile_missing", lambda: "no C compiler (cc, gcc or clang) on PATH")
    settings = Settings(data_dir=tmp_path, speed=Speed(compile="on"))
    with caplog.at_level(logging.ERROR, logger="gouache.worker"):
        assert asyncio.run(_serve(settings, "w-1")) == 2
    assert any('cannot start: speed.compile = "on" cannot work on this machine: no C compiler'
               in r.getMessage() for r in caplog.records)  # fmt: skip


@pytest.mark.parametrize("family", ["sd", "sdxl", "flux", "sd3", "z-image"])
def test_compile_wraps_only_a_unet_call(family, caplog) -> None:
    """BucketedUNet pads a UNet's positional rows; a transformer called by keyword (Flux, SD3)
    or with a list of rows (Z-Image) would break in it, so those run eager, with a warning."""
    from gouache.config import ModelSpec
    from gouache.generation.families import family_named
    from gouache.generation.families.base import LoadedModel
    from gouache.generation.loop.speed import apply_speed_options

    model = LoadedModel("m", ModelSpec(path="x"), family_named(family), torch.device("cpu"),
                        torch.float32, (), (), torch.nn.Identity(), torch.nn.Identity(), {})  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="gouache.generation.loop.speed"):
        apply_speed_options(model, SpeedOptions(compile=True, compile_buckets=(1, 2)))
    unet_family = family in ("sd", "sdxl")
    assert isinstance(model.denoiser_call, BucketedUNet) is unet_family
    assert any("runs eager" in r.getMessage() for r in caplog.records) is not unet_family


def test_gouache_generate_refuses_compile_where_it_cannot_work(tmp_path, monkeypatch, capsys) -> None:
    from gouache import cli
    from gouache.generation.loop import speed

    monkeypatch.setattr(speed, "compile_missing", lambda: "no C++ compiler (g++) on PATH")
    monkeypatch.setenv("GOUACHE_SPEED__COMPILE", "on")
    assert cli.main(["generate", "a", "cat", "-o", str(tmp_path), "--data-dir", str(tmp_path)]) == 2
    assert 'gouache: speed.compile = "on" cannot work on this machine: no C++ compiler' in capsys.readouterr().err

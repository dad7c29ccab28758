"""Speed options benchmark: what each option of ``[speed]`` does to the UNet and a running batch.

    .venv/bin/python benchmarks/speed.py           # CPU, builtin:demo, ~6 min on 2 cores
    .venv/bin/python benchmarks/speed.py --quick   # smoke run without compile, < 60 s
    .venv/bin/python benchmarks/speed.py --gpu     # prepared, CUDA only: SD1.5 architecture

Three parts, contenders interleaved call by call (round robin, rotating start) so that a noisy
machine slows them alike:

1. ``unet``: milliseconds per UNet call at 1, 8 and 32 rows for eager PyTorch (fp32, SDPA),
   channels_last, ``torch.compile`` through ``BucketedUNet`` (padded to the bucket), both,
   bfloat16 weights, and the classic (non-SDPA) attention processor. The compile seconds of the
   first call per bucket are reported apart.
2. ``running``: a step-level ``RunningBatch`` of 32 one-image requests (20 steps, euler-a and
   ddim, CFG 5) end to end, images/s, for eager, channels_last, batched scheduler steps, and
   the shipped defaults (``resolve_speed`` with every switch on ``auto``), and the seconds spent
   in scheduler arithmetic (``lanes.advance_lanes``).
3. ``--gpu``: part 1 on a randomly initialised SD1.5 UNet at 64x64 latents in fp16/bf16/fp32.

Writes ``benchmarks/results/speed{,-quick,-gpu}.{json,md}`` and, for the full CPU run, the
docs/benchmarks.md table between ``<!-- speed:begin -->`` and ``<!-- speed:end -->``.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]  # benchmarks/queue.py
sys.path.insert(0, str(_HERE.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from gouache.config import Speed, builtin_demo_spec  # noqa: E402
from gouache.generation.loop import running as running_module  # noqa: E402
from gouache.generation.loop.batch import BatchItem, LaneSpec, ShapeKey  # noqa: E402
from gouache.generation.loop.speed import (  # noqa: E402
    EAGER,
    BucketedUNet,
    SpeedOptions,
    resolve_speed,
)
from gouache.generation.models import ModelRegistry  # noqa: E402

RESULTS = _HERE / "results"
README = _HERE.parent / "docs" / "benchmarks.md"  # its speed table
BEGIN, END = "<!-- speed:begin -->", "<!-- speed:end -->"
MODEL = "builtin:demo"
SIZE = 32


def _throughput_module() -> Any:
    spec = importlib.util.spec_from_file_location("gouache_throughput", _HERE / "throughput.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# -- part 1: one UNet call ----------------------------------------------------------------------


def unet_contenders(unet: torch.nn.Module, buckets: tuple[int, ...], gpu: bool,
                    compile: bool) -> dict[str, Any]:  # fmt: skip
    """Name -> (callable, memory format of its input) over copies of ``unet``."""
    from diffusers.models.attention_processor import AttnProcessor

    def copy_of(**to: Any) -> torch.nn.Module:
        return copy.deepcopy(unet).to(**to)

    contenders: dict[str, Any] = {"eager": (unet, torch.contiguous_format)}
    contenders["channels_last"] = (copy_of(memory_format=torch.channels_last), torch.channels_last)
    if compile and not gpu:
        contenders["compile"] = (BucketedUNet(copy_of(), buckets), torch.contiguous_format)
    if compile:
        cl = copy_of(memory_format=torch.channels_last)
        contenders["compile+channels_last"] = (BucketedUNet(cl, buckets), torch.channels_last)
    if unet.dtype != torch.bfloat16:
        contenders["bf16"] = (copy_of(dtype=torch.bfloat16), torch.contiguous_format)
    if gpu and unet.dtype != torch.float32:
        contenders["fp32"] = (copy_of(dtype=torch.float32), torch.contiguous_format)
    classic = copy_of()
    classic.set_attn_processor(AttnProcessor())
    contenders["classic_attention"] = (classic, torch.contiguous_format)
    return contenders


def _inputs(unet: torch.nn.Module, rows: int, side: int, dtype: torch.dtype, fmt: Any) -> tuple:
    device = unet.device
    g = torch.Generator().manual_seed(rows)
    sample = torch.randn(rows, unet.config.in_channels, side, side, generator=g)
    embeds = torch.randn(rows, 77, unet.config.cross_attention_dim, generator=g)
    t = torch.linspace(900, 100, rows)
    sample = sample.to(device, dtype).contiguous(memory_format=fmt)
    return sample, t.to(device), embeds.to(device, dtype)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_unet(unet: torch.nn.Module, side: int, rows_list: tuple[int, ...], reps: int,
               gpu: bool, compile: bool = True) -> dict[str, Any]:  # fmt: skip
    contenders = unet_contenders(unet, tuple(rows_list), gpu, compile)
    names = list(contenders)
    times: dict[str, dict[int, list[float]]] = {n: {r: [] for r in rows_list} for n in names}
    first: dict[str, dict[int, float]] = {n: {} for n in names}
    reference: dict[int, torch.Tensor] = {}
    diffs: dict[str, float] = {n: 0.0 for n in names}
    device = unet.device
    with torch.inference_mode():
        for rows in rows_list:
            for rep in range(reps + 1):  # rep 0: warm-up (and compile) per contender
                order = names[rep % len(names):] + names[: rep % len(names)]
                for name in order:
                    module, fmt = contenders[name]
                    dtype = next(p.dtype for p in module.parameters())
                    sample, t, embeds = _inputs(unet, rows, side, dtype, fmt)
                    _sync(device)
                    start = time.perf_counter()
                    out = module(sample, t, encoder_hidden_states=embeds, return_dict=False)[0]
                    _sync(device)
                    seconds = time.perf_counter() - start
                    if rep == 0:
                        first[name][rows] = seconds
                        if name == "eager":
                            reference[rows] = out.float()
                        continue
                    times[name][rows].append(seconds)
                    if rows in reference:
                        diffs[name] = max(diffs[name], (out.float() - reference[rows]).abs().max().item())
    base = {r: statistics.median(times["eager"][r]) for r in rows_list}
    out: dict[str, Any] = {}
    for name in names:
        med = {r: statistics.median(times[name][r]) for r in rows_list}
        out[name] = {
            "ms_per_call": {str(r): round(med[r] * 1e3, 2) for r in rows_list},
            "speedup_vs_eager": {str(r): round(base[r] / med[r], 3) for r in rows_list},
            "first_call_s": {str(r): round(first[name][r], 2) for r in rows_list},
            "max_abs_diff_vs_eager": float(f"{diffs[name]:.3g}"),
        }
    return out


# -- part 2: a running batch end to end --------------------------------------------------------


def _jobs(n: int, steps: int) -> list[tuple[BatchItem, LaneSpec]]:
    samplers = ("euler-a", "ddim")
    return [
        (BatchItem(f"r{i}", f"a small red circle number {i}", seed=i), LaneSpec(steps, samplers[i % 2], 5.0))
        for i in range(n)
    ]  # fmt: skip


def bench_running(cache: Path, n: int, steps: int, reps: int) -> dict[str, Any]:
    shipped = resolve_speed(Speed())
    options = {
        "eager": EAGER,
        "channels_last": SpeedOptions(channels_last=True),
        "batched_steps": SpeedOptions(batched_steps=True),
        "shipped_defaults": shipped,
    }
    registries = {name: ModelRegistry({MODEL: builtin_demo_spec()}, cache_dir=cache, device="cpu",
                                      speed=opts) for name, opts in options.items()}  # fmt: skip
    for registry in registries.values():
        registry.get(MODEL)
    scheduler_seconds = {"s": 0.0}
    real = running_module.advance_lanes

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            scheduler_seconds["s"] += time.perf_counter() - start

    running_module.advance_lanes = timed
    names = list(options)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    try:
        for rep in range(reps + 1):
            order = names[rep % len(names):] + names[: rep % len(names)]
            for name in order:
                batch = running_module.RunningBatch(registries[name], ShapeKey(MODEL, SIZE, SIZE),
                                                    row_budget=2 * n, decode_chunk=2)  # fmt: skip
                scheduler_seconds["s"] = 0.0
                start = time.perf_counter()
                for item, spec in _jobs(n, steps):
                    batch.admit(item, spec)
                done = 0
                while len(batch):
                    done += len(batch.step())
                wall = time.perf_counter() - start
                assert done == n
                if rep:  # rep 0 warms every contender up
                    runs[name].append((wall, scheduler_seconds["s"]))
    finally:
        running_module.advance_lanes = real
    base = statistics.median(w for w, _ in runs["eager"])
    return {
        name: {
            "options": vars(options[name]) | {"compile_buckets": list(options[name].compile_buckets)},
            "images_per_s": round(n / statistics.median(w for w, _ in runs[name]), 3),
            "speedup_vs_eager": round(base / statistics.median(w for w, _ in runs[name]), 3),
            "scheduler_s_per_run": round(statistics.median(s for _, s in runs[name]), 3),
            "runs": len(runs[name]),
        }
        for name in names
    }


# -- report ------------------------------------------------------------------------------------


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [f"Machine: {m['cpu']} ({m['cpus']} CPUs, torch threads {m['torch_threads']}), "
             f"{m['gpu'] or 'no GPU'}, torch {m['torch']}; model {report['model']}, "
             f"latents {report['latent_side']}x{report['latent_side']}; load average "
             f"{report['load_average']}.", ""]  # fmt: skip
    rows = list(next(iter(report["unet"].values()))["ms_per_call"])
    lines += ["| UNet call | " + " | ".join(f"{r} rows: ms (x eager)" for r in rows)
              + " | first call s (compile) | max diff vs eager |",
              "| --- |" + " --- |" * (len(rows) + 2)]  # fmt: skip
    for name, fig in report["unet"].items():
        cells = [f"{fig['ms_per_call'][r]} ({fig['speedup_vs_eager'][r]}x)" for r in rows]
        first = " / ".join(str(fig["first_call_s"][r]) for r in rows)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {first} | {fig['max_abs_diff_vs_eager']} |")
    if "running" in report:
        r = report["running_setup"]
        lines += ["", f"Running batch: {r['requests']} one-image requests, {r['steps']} steps, "
                  f"euler-a and ddim, CFG 5, row budget {2 * r['requests']}, median of "
                  f"{r['reps']} runs.", "",
                  "| running batch | images/s | x eager | scheduler s per run |",
                  "| --- | --- | --- | --- |"]  # fmt: skip
        for name, fig in report["running"].items():
            lines.append(f"| {name} | {fig['images_per_s']} | {fig['speedup_vs_eager']}x | "
                         f"{fig['scheduler_s_per_run']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def write(report: dict[str, Any], out: Path, suffix: str, readme: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"speed{suffix}.json").write_text(json.dumps(report, indent=1) + "\n")
    table = markdown(report)
    (out / f"speed{suffix}.md").write_text(table)
    if readme and README.exists():
        text = README.read_text()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            README.write_text(f"{head}{BEGIN}\n{table}{END}{rest.split(END, 1)[1]}")


def cpu_main(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    throughput = _throughput_module()
    cache = Path(os.environ.get("GOUACHE_BENCH_CACHE", "/tmp/gouache-bench-cache"))
    registry = ModelRegistry({MODEL: builtin_demo_spec()}, cache_dir=cache, device="cpu")
    unet = registry.get(MODEL).denoiser
    rows = (1, 8) if args.quick else (1, 8, 32)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "machine": throughput.machine(args.threads),
        "model": MODEL,
        "latent_side": SIZE,
        "load_average": round(os.getloadavg()[0], 2),
        "unet": bench_unet(unet, SIZE, rows, 3 if args.quick else 9, gpu=False,
                           compile=not args.quick),  # compiling takes ~1 min per bucket
    }
    n, steps, reps = (8, 4, 1) if args.quick else (32, 20, 3)
    report["running_setup"] = {"requests": n, "steps": steps, "reps": reps}
    report["running"] = bench_running(cache, n, steps, reps)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["load_average_after"] = round(os.getloadavg()[0], 2)
    write(report, args.out, "-quick" if args.quick else "", readme=not args.quick)
    print(markdown(report))
    return 0


def gpu_main(args: argparse.Namespace) -> int:
    """SD1.5's UNet (859.5M parameters, random weights) at 64x64 latents. CUDA only."""
    if not torch.cuda.is_available():
        print("--gpu needs a CUDA device; nothing was measured.", file=sys.stderr)
        return 2
    from diffusers import UNet2DConditionModel

    throughput = _throughput_module()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**throughput.SD15_UNET).to("cuda", torch.float16).eval()
    started = time.perf_counter()
    report = {
        "mode": "gpu",
        "machine": throughput.machine(torch.get_num_threads()),
        "model": "SD1.5 architecture, random weights, fp16",
        "latent_side": 64,
        "load_average": round(os.getloadavg()[0], 2),
        "unet": bench_unet(unet, 64, (8, 32), 5, gpu=True),
    }
    report["seconds"] = round(time.perf_counter() - started, 1)
    write(report, args.out, "-gpu", readme=False)
    print(markdown(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI size")
    parser.add_argument("--gpu", action="store_true", help="CUDA: the SD1.5 architecture")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    runner: Callable[[argparse.Namespace], int] = gpu_main if args.gpu else cpu_main
    return runner(args)


if __name__ == "__main__":
    raise SystemExit(main())

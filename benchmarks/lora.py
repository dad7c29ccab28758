"""LoRA benchmark: mixed LoRAs in one step-level batch vs batches keyed by LoRA set vs swap-in.

    .venv/bin/python benchmarks/lora.py           # full CPU run (builtin:demo)
    .venv/bin/python benchmarks/lora.py --quick   # a smaller load, under ~2 minutes on 2 cores
    .venv/bin/python benchmarks/lora.py --threads 1 --out benchmarks/results/lora-1thread.json

Torch runs with its own thread count (one per core) unless ``--threads`` says otherwise: that is
how the worker runs, and on a multi-core CPU, as on a GPU, a call of a few rows leaves part of the
device idle. At one thread a call costs about the same per row at 3 rows as at 32, so the
one-thread run shows the cost of LoRAs without batching's economy of scale.

Eight random low-rank LoRAs are made for the demo model's UNet (rank 8 on every attention
projection and feed-forward output, diffusers/PEFT layout), with Zipf popularity (weight
1/k); each request takes one or two of them at a scale of 0.6 or 1.0. The whole load arrives at
once (a burst), one image per request. Contenders, one process, one model:

- ``mixed``: gouache. One ``RunningBatch``; every row gets its own LoRAs (``loras/bank.py``).
- ``keyed``: one running batch per LoRA set and scales (vLLM-Omni's rule: a step batch holds
  one adapter set), the sets served in order of their first request.
- ``swap``: one request at a time, its LoRAs loaded for it (what LoRA bots do per request).
- ``none``: the same load without LoRAs through ``mixed``'s path: the overhead baseline.

``none`` and ``mixed`` run ``--rounds`` times, alternating, and each keeps its best round: the
overhead is a ratio of two similar figures, so both see the same machine state (a warm cache,
the same background load) rather than whichever came first.

Figures: images/s over the run, denoiser rows per call, p95 wait from submission to the
request's first denoiser step. The JSON holds what this run measured and the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# benchmarks/queue.py shadows the stdlib ``queue`` (torch imports it): drop this folder from
# the import path, then add the repository root.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from gouache.config import builtin_demo_spec  # noqa: E402
from gouache.generation.loop.batch import BatchItem, LaneSpec  # noqa: E402
from gouache.generation.loop.running import RunningBatch  # noqa: E402
from gouache.generation.models import ModelRegistry  # noqa: E402
from gouache.request import ShapeKey  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
MODEL = "builtin:demo"
LORAS = 8
TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.2")


def make_loras(unet: torch.nn.Module, folder: Path, rank: int = 8) -> dict[str, Path]:
    """Random LoRAs for the demo UNet (seeded), in the PEFT layout diffusers saves."""
    out = {}
    for k in range(LORAS):
        g = torch.Generator().manual_seed(100 + k)
        tensors = {}
        for name, layer in unet.named_modules():
            if isinstance(layer, torch.nn.Linear) and name.endswith(TARGETS):
                tensors[f"unet.{name}.lora_A.weight"] = torch.randn(rank, layer.in_features, generator=g) * 0.05
                tensors[f"unet.{name}.lora_B.weight"] = torch.randn(layer.out_features, rank, generator=g) * 0.05
        path = folder / f"lora{k}.safetensors"
        save_file(tensors, str(path))
        out[f"lora{k}"] = path
    return out


def workload(n: int, seed: int = 0) -> list[tuple[tuple[str, float], ...]]:
    """Each request's LoRAs: one or two distinct names, Zipf-popular, at 0.6 or 1.0."""
    rng = random.Random(seed)
    weights = [1 / (k + 1) for k in range(LORAS)]
    out = []
    for _ in range(n):
        names: list[str] = []
        while len(names) < rng.choice((1, 2)):
            name = f"lora{rng.choices(range(LORAS), weights)[0]}"
            if name not in names:
                names.append(name)
        out.append(tuple((name, rng.choice((0.6, 1.0))) for name in names))
    return out


def _items(sets: list[tuple[tuple[str, float], ...]]) -> list[BatchItem]:
    return [BatchItem(f"r{i}", f"a red circle {i}", seed=i, loras=s) for i, s in enumerate(sets)]


def run(registry: ModelRegistry, items: list[BatchItem], mode: str, spec: LaneSpec, rows: int) -> dict[str, Any]:
    """Serve ``items`` (all submitted at t=0) as ``mode`` does; returns the figures."""
    model = registry.get(MODEL)
    shape = ShapeKey(MODEL, model.spec.default_width, model.spec.default_height)
    if mode == "keyed":
        groups: dict[Any, list[BatchItem]] = {}
        for item in items:
            groups.setdefault(item.loras, []).append(item)
        waves = list(groups.values())
    elif mode == "swap":
        waves = [[item] for item in items]
    else:
        waves = [items]
    first: dict[str, float] = {}
    calls = total_rows = 0
    start = time.perf_counter()
    for wave in waves:
        if mode == "swap":  # swap-in: this request's LoRAs are loaded for it, the others gone
            model.loras.budget_bytes = 0
            model.loras.prepare([])
        batch = RunningBatch(registry, shape, row_budget=rows)
        for item in wave:
            batch.admit(item, spec)
        while len(batch):
            batch.step()
            now = time.perf_counter() - start
            for item_id in batch.stats.started:
                first.setdefault(item_id, now)
            calls += batch.stats.denoiser_calls
            total_rows += batch.stats.rows
    elapsed = time.perf_counter() - start
    model.loras.budget_bytes = 1 << 30
    waits = sorted(first.values())
    return {"seconds": round(elapsed, 3), "images_per_s": round(len(items) / elapsed, 3),
            "rows_per_call": round(total_rows / max(1, calls), 2), "denoiser_calls": calls,
            "p95_wait_to_first_step_s": round(waits[int(0.95 * (len(waits) - 1))], 3),
            "batches": len(waves)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="16 requests of 8 steps")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own, one per core, as the worker runs)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS / "lora.json")
    parser.add_argument("--rounds", type=int, default=2, help="alternating none/mixed rounds (best kept)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    requests, steps, rows = (16, 8, 16) if args.quick else (48, 20, 32)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(os.environ.get("GOUACHE_BENCH_CACHE", tmp))
        paths: dict[str, Path] = {}
        registry = ModelRegistry({MODEL: builtin_demo_spec()}, cache_dir=cache, device="cpu", loras=paths.get)
        model = registry.get(MODEL)
        paths.update(make_loras(model.denoiser, Path(tmp)))
        spec = LaneSpec(steps, "ddim", model.spec.default_guidance)
        sets = workload(requests)
        plain = [BatchItem(f"w{i}", "warm up", seed=i, loras=s) for i, s in enumerate(sets[:2])]
        run(registry, plain, "mixed", LaneSpec(2, "ddim", 2.0), rows)  # load every part once
        figures: dict[str, Any] = {}
        rounds: dict[str, list[float]] = {"none": [], "mixed": []}
        for mode in [*("none", "mixed") * max(1, args.rounds), "keyed", "swap"]:
            items = _items([() for _ in sets] if mode == "none" else sets)
            result = run(registry, items, mode, spec, rows)
            print(mode, result, flush=True)
            if mode in rounds:
                rounds[mode].append(result["images_per_s"])
            if mode not in figures or result["images_per_s"] > figures[mode]["images_per_s"]:
                figures[mode] = result
    mixed = figures["mixed"]["images_per_s"]
    report = {
        "benchmark": "lora", "quick": args.quick, "model": MODEL, "requests": requests,
        "steps": steps, "row_budget": rows, "loras": LORAS, "lora_sets": len(set(sets)),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "load_average": [round(x, 2) for x in os.getloadavg()]},
        "contenders": figures,
        "rounds_images_per_s": rounds,
        "mixed_vs_keyed": round(mixed / figures["keyed"]["images_per_s"], 2),
        "mixed_vs_swap": round(mixed / figures["swap"]["images_per_s"], 2),
        "mixed_vs_no_lora": round(mixed / figures["none"]["images_per_s"], 2),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(table(report))
    print(table(report))
    return 0


def table(report: dict[str, Any]) -> str:
    lines = [f"LoRA benchmark ({'quick' if report['quick'] else 'full'}): {report['requests']} requests "
             f"of {report['steps']} steps on {report['model']}, {report['lora_sets']} distinct LoRA sets, "
             f"{report['machine']['threads']} thread(s)", "",
             "| contender | images/s | rows per call | p95 wait to first step (s) | batches |",
             "|---|---|---|---|---|"]  # fmt: skip
    for name, f in report["contenders"].items():
        lines.append(f"| {name} | {f['images_per_s']} | {f['rows_per_call']} | "
                     f"{f['p95_wait_to_first_step_s']} | {f['batches']} |")  # fmt: skip
    lines += ["", f"mixed / keyed: {report['mixed_vs_keyed']}x; mixed / swap: {report['mixed_vs_swap']}x; "
              f"mixed / no LoRA: {report['mixed_vs_no_lora']}x"]  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())

"""The GPU check: one prepared script for a lent CUDA machine (under 8 minutes on one H100).

    python benchmarks/gpu_check.py --out DIR            # on CUDA only; no network
    python benchmarks/gpu_check.py --out DIR --dry-run  # CPU, tiny sizes: every step wired

In order: tiny SD and SDXL in fp16 through the loop (a single-file copy of each too); an
SD-architecture VAE forced to overflow in fp16 (its images and GIF frames must not be black);
injected out-of-memory (torch's and cuBLAS's) at each GPU call site, other users' jobs
finishing; the allocator with and without ``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True``
(peak reserved against peak allocated memory over batches of changing sizes, each in a fresh
process); then ``speed.py --gpu`` and a short ``throughput.py --gpu``. Each step writes its
figures and verdict to ``DIR/gpu_check.json``; nothing is estimated or filled in by hand.
The dry run does the same on the CPU (bfloat16, tiny sizes) and lists the two benchmark
commands instead of running them (minutes each on a CPU).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# benchmarks/queue.py would shadow the standard library's queue (torch imports it).
sys.path[:] = [str(REPO), *(p for p in sys.path if Path(p or ".").resolve() != REPO / "benchmarks")]


def _loop(registry: Any, name: str, frames: int = 0) -> dict[str, Any]:
    import numpy as np

    from gouache.generation.loop.batch import BatchItem, LaneSpec, ShapeKey
    from gouache.generation.loop.engine import Engine

    engine = Engine(registry)
    batch = engine.running_batch(ShapeKey(name, 64, 64), row_budget=16, decode_chunk=2)
    for i, user in enumerate(("ann", "bob")):
        batch.admit(BatchItem(f"{name}-{i}", "a red fox", seed=i, count=2, frames_every=frames),
                    LaneSpec(3, "euler-a", 5.0), user=user)  # fmt: skip
    start = time.perf_counter()
    results = batch.run()
    seconds = time.perf_counter() - start
    pictures = [np.asarray(im, np.float32) for r in results for im in [*r.images, *sum(r.frames, [])]]
    return {"ok": all(r.ok for r in results), "seconds": round(seconds, 3),
            "not_black": all(p.max() > 10 for p in pictures)}  # fmt: skip


def run_checks(out: Path, *, dry_run: bool) -> dict[str, Any]:
    import torch

    from gouache.config import ModelSpec
    from gouache.generation.models import ModelRegistry
    from gouache.generation.tiny import build_single_file_pair

    if not dry_run and not torch.cuda.is_available():
        raise SystemExit("gpu_check needs a CUDA device (use --dry-run on a CPU)")
    device, dtype = ("cpu", "bfloat16") if dry_run else ("cuda", "float16")
    report: dict[str, Any] = {"device": torch.cuda.get_device_name() if not dry_run else "cpu (dry run)",
                              "dtype": dtype, "steps": {}}  # fmt: skip
    steps = report["steps"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        specs = {}
        for family in ("sd", "sdxl"):
            folder, file, config = build_single_file_pair(root / family, family)
            specs[family] = ModelSpec(path=str(folder), dtype=dtype)
            specs[f"{family}-file"] = ModelSpec(path=str(file), config=str(config), dtype=dtype)
        registry = ModelRegistry(specs, cache_dir=root / "cache", device=device)
        for name in specs:
            steps[f"loop:{name}"] = _loop(registry, name, frames=1)
        steps["vae-overflow"] = _overflow(root, specs["sd"], device)
        steps["oom-sites"] = _oom_sites(registry)
    steps["allocator"] = _allocator(dry_run)
    benchmarks = [[sys.executable, "benchmarks/speed.py", "--gpu"],
                  [sys.executable, "benchmarks/throughput.py", "--gpu", "--only", "step", "--quick"]]  # fmt: skip
    for command in benchmarks:
        key = " ".join(command[1:])
        if dry_run:
            steps[key] = {"ok": True, "skipped": "dry run: listed, not run"}
            continue
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=180)
        steps[key] = {"ok": done.returncode == 0, "tail": done.stdout[-2000:] + done.stderr[-2000:]}
    report["ok"] = all(step["ok"] for step in steps.values())
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def _overflow(root: Path, spec: Any, device: str) -> dict[str, Any]:
    """The SD VAE with a forced fp16 overflow (tests/unit/generation/test_vae_upcast.py)."""
    import torch
    from diffusers import AutoencoderKL

    from gouache.generation.models import ModelRegistry

    vae_dir = Path(spec.path) / "vae"
    vae = AutoencoderKL.from_pretrained(vae_dir)
    with torch.no_grad():
        vae.post_quant_conv.weight[0] = 1e4
        vae.post_quant_conv.bias[0] = 6e4
        vae.decoder.conv_in.weight[:, 0] = 0.0
    vae.register_to_config(force_upcast=False)
    vae.save_pretrained(vae_dir, safe_serialization=True)
    registry = ModelRegistry({"over": spec.model_copy(update={"dtype": "float16"})},
                             cache_dir=root / "cache", device=device)  # fmt: skip
    result = _loop(registry, "over", frames=1)
    result["vae_dtype_after"] = str(registry.get("over").vae.dtype)
    result["ok"] = result["ok"] and result["not_black"]
    return result


def _oom_sites(registry: Any) -> dict[str, Any]:
    """An injected out-of-memory at each site fails only "ann"'s job; "bob"'s finishes."""
    import torch

    from gouache.errors import ResourceExhausted
    from gouache.generation.loop.batch import BatchItem, LaneSpec, ShapeKey
    from gouache.generation.loop.engine import Engine

    found: dict[str, Any] = {"ok": True}
    for stage in ("encode", "denoiser", "decode", "frames"):
        for kind in ("torch", "cublas"):

            def fault(at: str, ids: Any, stage: str = stage, kind: str = kind) -> None:
                if at == stage and ids == ["ann"]:
                    raise (torch.OutOfMemoryError("injected") if kind == "torch"
                           else RuntimeError("CUBLAS_STATUS_ALLOC_FAILED (injected)"))  # fmt: skip

            batch = Engine(registry, fault=fault).running_batch(ShapeKey("sd", 64, 64), row_budget=16,
                                                                decode_chunk=2)  # fmt: skip
            results = {}
            for user in ("ann", "bob"):
                try:
                    batch.admit(BatchItem(user, "a fox", seed=1, frames_every=1), LaneSpec(2, "ddim", 5.0),
                                user=user)  # fmt: skip
                except ResourceExhausted:
                    results[user] = "failed alone"
            results |= {r.item_id: "ok" if r.ok else "failed alone" for r in batch.run()}
            # a frame that never fits is dropped, so "ann" may finish: only "bob" must
            good = results.get("bob") == "ok"
            found[f"{stage}:{kind}"] = results
            found["ok"] = found["ok"] and good
    return found


def _allocator(dry_run: bool) -> dict[str, Any]:
    """The allocator probe in two fresh processes, default and expandable segments."""
    import os

    found: dict[str, Any] = {"ok": True}
    for name, conf in (("default", None), ("expandable_segments", "expandable_segments:True")):
        env = {k: v for k, v in os.environ.items() if k != "PYTORCH_CUDA_ALLOC_CONF"}
        if conf:
            env["PYTORCH_CUDA_ALLOC_CONF"] = conf
        command = [sys.executable, "benchmarks/gpu_check.py", "--allocator-probe"] + (["--dry-run"] if dry_run else [])
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240, env=env)
        lines = done.stdout.strip().splitlines()
        found[name] = json.loads(lines[-1]) if done.returncode == 0 and lines else {"error": done.stderr[-1500:]}
        found["ok"] = found["ok"] and done.returncode == 0
    return found


def allocator_probe(dry_run: bool) -> dict[str, Any]:
    """Tiny SDXL batches of changing sizes and row counts (what a busy worker sees); on CUDA,
    peak reserved and peak allocated bytes: their ratio is what fragmentation costs."""
    import torch

    from gouache.config import ModelSpec
    from gouache.generation.loop.batch import BatchItem, LaneSpec, ShapeKey
    from gouache.generation.loop.engine import Engine
    from gouache.generation.models import ModelRegistry
    from gouache.generation.tiny import build_single_file_pair

    device, dtype = ("cpu", "bfloat16") if dry_run else ("cuda", "float16")
    with tempfile.TemporaryDirectory() as tmp:
        folder, _, _ = build_single_file_pair(Path(tmp) / "sdxl", "sdxl")
        registry = ModelRegistry({"xl": ModelSpec(path=str(folder), dtype=dtype)}, cache_dir=Path(tmp) / "c",
                                 device=device)  # fmt: skip
        engine = Engine(registry)
        start = time.perf_counter()
        sizes = [(64, 1), (64, 2)] if dry_run else [(64, 2), (128, 6), (96, 3), (192, 4), (64, 8), (160, 2)] * 4
        for k, (size, lanes) in enumerate(sizes):
            batch = engine.running_batch(ShapeKey("xl", size, size), row_budget=32, decode_chunk=4)
            for i in range(lanes):
                batch.admit(BatchItem(f"{k}-{i}", "a red fox", seed=i), LaneSpec(3, "euler", 5.0))
            batch.run()
        out: dict[str, Any] = {"batches": len(sizes), "seconds": round(time.perf_counter() - start, 3)}
        if device == "cuda":
            stats = torch.cuda.memory_stats()
            out |= {"peak_reserved_mb": round(stats["reserved_bytes.all.peak"] / 2**20, 1),
                    "peak_allocated_mb": round(stats["allocated_bytes.all.peak"] / 2**20, 1)}  # fmt: skip
            out["reserved_over_allocated"] = round(out["peak_reserved_mb"] / max(out["peak_allocated_mb"], 1e-9), 3)
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gpu-check")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, no benchmarks run")
    parser.add_argument("--allocator-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.allocator_probe:
        print(json.dumps(allocator_probe(args.dry_run)))
        return 0
    report = run_checks(args.out, dry_run=args.dry_run)
    print(json.dumps({k: v.get("ok") for k, v in report["steps"].items()}, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

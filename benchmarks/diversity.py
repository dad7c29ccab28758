"""Enlarging /diversity, method against method, on the shipped demo model.

    .venv/bin/python benchmarks/diversity.py [--n 8] [--prompts 4]

Fixed one-shape prompts and seeds, N images each, through the worker's own code
(``worker/loading.build_registry`` -> ``Engine`` -> ``generation.enlarge.generate_enlarged``):
the baseline and each method (cads, interval, variants) on the same seeds. Per method:
- semantic Vendi (demo-CLIP image features) and style Vendi (square-root colour histograms),
  each the mean over prompts, and the change against the baseline;
- fidelity read by the demo judge (a CNN trained only on rendered scenes; independent of the
  CLIP that the variants method selects with): is the subject's colour and shape the prompt's?
- the CLIP score against the original prompt, and seconds per set.
Writes benchmarks/results/diversity.json. Target: one method raises semantic Vendi by at
least 30% while the judge's accuracy drops by no more than 5 points.
"""

from __future__ import annotations

import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: tools.demo

import argparse
import json
import os
import platform
import re
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = (
    "a large red circle in the center on a plain blue background",
    "a small green star at the left on a striped yellow background",
    "a large purple square at the top on a dotted white background",
    "a small orange triangle at the right on a gradient black background",
    "a large white diamond at the bottom on a plain green background",
    "a small blue ring in the center on a noisy orange background",
)
SEED = 1000  # prompt p uses seeds SEED + 100 p + i
METHODS = ("cads", "interval", "variants")
TARGET_GAIN, TARGET_DROP = 0.30, 0.05


def _subject(prompt: str) -> tuple[str, str]:
    from tools.demo.world import COLOURS, SHAPES

    words = re.findall(r"[a-z]+", prompt)
    colour = next(w for w in words if w in COLOURS)
    shape = next(w for w in words if w in SHAPES)
    return colour, shape


def _judged(judge: Any, prompt: str, images: Sequence[Any]) -> dict[str, float]:
    from tools.demo.judge import judge_batch

    colour, shape = _subject(prompt)
    read = judge_batch(judge, np.stack([np.asarray(i.convert("RGB")) for i in images]))
    ok_colour = [c == colour for c in read["colour"]]
    ok_shape = [s == shape for s in read["shape"]]
    both = [a and b for a, b in zip(ok_colour, ok_shape, strict=True)]
    return {"colour": float(np.mean(ok_colour)), "shape": float(np.mean(ok_shape)), "both": float(np.mean(both))}


def run(n: int, prompts: Sequence[str], data_dir: Path) -> dict[str, Any]:
    import torch

    from gouache.config import Settings
    from gouache.generation.diversity.enlarge import generate_enlarged
    from gouache.generation.diversity.scorer import DiversityScorer
    from gouache.generation.loop.batch import BatchItem, BatchKey, ItemResult
    from gouache.generation.loop.engine import Engine
    from gouache.worker.loading import build_registry
    from tools.demo.judge import load_judge

    torch.manual_seed(0)
    settings = Settings(data_dir=data_dir)
    registry = build_registry(settings, device="cpu")
    engine, scorer = Engine(registry), DiversityScorer(registry)
    spec = settings.models["builtin:demo"]
    key = BatchKey("builtin:demo", "txt2img", spec.default_width, spec.default_height,
                   spec.default_steps, spec.default_sampler, spec.default_guidance)  # fmt: skip
    judge = load_judge(ROOT / "gouache/models/demo/judge")
    items = [BatchItem(f"p{p}", prompt, seed=SEED + 100 * p, count=n) for p, prompt in enumerate(prompts)]
    encoders = scorer.encoders_for("builtin:demo")
    rows: dict[str, list[dict[str, Any]]] = {"baseline": [], **{m: [] for m in METHODS}}
    cache: dict[str, tuple[list[ItemResult], float]] = {}  # the baseline: same seeds every time
    calls: list[float] = []

    def timed(k: BatchKey, batch: Sequence[BatchItem]) -> list[ItemResult]:
        start = time.perf_counter()
        name = repr((k, list(batch)))
        if name in cache and not calls:  # the baseline again: reuse it, keep its time
            out, seconds = cache[name]
            calls.append(seconds)
            return out
        out = engine.generate(k, batch)
        calls.append(time.perf_counter() - start)
        cache.setdefault(name, (out, calls[-1]))
        return out

    for method in METHODS:
        start = time.perf_counter()
        calls.clear()
        runs = generate_enlarged(timed, key, items, method, clip=encoders.clip,
                                 known=scorer.known_for("builtin:demo"))  # fmt: skip
        baseline_time = calls[0]
        total = time.perf_counter() - start + (baseline_time if method != METHODS[0] else 0.0)
        for item in items:
            for name, result, seconds in (("baseline", runs[item.item_id].baseline, baseline_time),
                                          (method, runs[item.item_id].enlarged, total - baseline_time)):  # fmt: skip
                if name == "baseline" and method != METHODS[0]:
                    continue  # the baseline is the same images every time (same seeds)
                report = scorer.report("builtin:demo", item.prompt, result.images)
                assert report.semantic is not None and report.fidelity is not None
                rows[name].append({
                    "prompt": item.prompt,
                    "semantic_vendi": report.semantic.vendi, "style_vendi": report.style.vendi,
                    "clip_score": report.fidelity, "judge": _judged(judge, item.prompt, result.images),
                    "seconds_per_set": seconds / len(items),
                    "prompts_used": sorted(set(runs[item.item_id].prompts)) if name != "baseline" else [item.prompt],
                })  # fmt: skip
        print(f"{method}: done in {total:.1f}s", file=sys.stderr, flush=True)
    return _summarise(rows, n, prompts)


def _summarise(rows: dict[str, list[dict[str, Any]]], n: int, prompts: Sequence[str]) -> dict[str, Any]:
    def mean(name: str, field: str, sub: str | None = None) -> float:
        values = [r[field][sub] if sub else r[field] for r in rows[name]]
        return float(np.mean(values))

    base = {f: mean("baseline", f) for f in ("semantic_vendi", "style_vendi", "clip_score")}
    base_acc = mean("baseline", "judge", "both")
    methods: dict[str, Any] = {}
    for name in rows:
        sem, sty, acc = mean(name, "semantic_vendi"), mean(name, "style_vendi"), mean(name, "judge", "both")
        methods[name] = {
            "semantic_vendi": round(sem, 3),
            "semantic_gain": round(sem / base["semantic_vendi"] - 1, 3),
            "style_vendi": round(sty, 3),
            "style_gain": round(sty / base["style_vendi"] - 1, 3),
            "judge_colour": round(mean(name, "judge", "colour"), 3),
            "judge_shape": round(mean(name, "judge", "shape"), 3),
            "judge_colour_and_shape": round(acc, 3),
            "judge_drop_points": round((base_acc - acc) * 100, 1),
            "clip_score": round(mean(name, "clip_score"), 2),
            "seconds_per_set": round(mean(name, "seconds_per_set"), 2),
            "meets_target": bool(sem / base["semantic_vendi"] - 1 >= TARGET_GAIN
                                 and (base_acc - acc) <= TARGET_DROP),  # fmt: skip
        }
    met = [m for m in METHODS if methods[m]["meets_target"]]
    return {
        "model": "builtin:demo", "n": n, "prompts": list(prompts), "seed": SEED,
        "target": {"semantic_gain": TARGET_GAIN, "judge_drop_points": TARGET_DROP * 100},
        "target_met_by": met, "methods": methods, "per_prompt": rows,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "torch_threads": __import__("torch").get_num_threads()},
    }  # fmt: skip


def table(result: dict[str, Any]) -> str:
    lines = ["| method | semantic Vendi | style Vendi | judge colour+shape | CLIP score | s per set |",
             "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for name, m in result["methods"].items():
        gain = "" if name == "baseline" else f" ({m['semantic_gain']:+.0%})"
        sgain = "" if name == "baseline" else f" ({m['style_gain']:+.0%})"
        drop = "" if name == "baseline" else f" ({-m['judge_drop_points']:+.1f} pts)"
        lines.append(f"| {name} | {m['semantic_vendi']:.2f}{gain} | {m['style_vendi']:.2f}{sgain} | "
                     f"{m['judge_colour_and_shape']:.0%}{drop} | {m['clip_score']:.1f} | {m['seconds_per_set']:.1f} |")  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/diversity.json")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = run(args.n, PROMPTS[: args.prompts], args.data_dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"target (semantic Vendi +{TARGET_GAIN:.0%}, judge drop <= {TARGET_DROP * 100:.0f} points) "
          f"met by: {', '.join(result['target_met_by']) or 'none'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

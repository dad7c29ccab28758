"""Sampler evaluation on the demo model: FID, KID and judged accuracy per sampler and step count.

    python -m tools.evaluate --samplers ddpm,ddim,pndm --steps 10,25,50 [--n 200]
    gouache evaluate ...            (the same, run as this module in a subprocess)

Every (sampler, steps) cell generates the same ``n`` images through gouache's own engine
(``Engine.generate``, one batch per cell): image *i* is held-out prompt ``i mod P`` with seed
``i``, at the model's default guidance and size. The reference is ``n`` renders of the same
scenes by the procedural world (new texture seeds). Reported per cell:

- FID and KID on the demo CLIP's L2-normalised image features (the geometry CLIP is trained
  in; ``benchmarks/demo_quality.py`` computes its figures the same way);
- with ``--inception PATH`` (or ``GOUACHE_INCEPTION_WEIGHTS``: a torchvision ``inception_v3``
  state dict on disk; nothing is downloaded), FID and KID on Inception-v3's 2048-d pool
  features too (images resized to 299 bilinear, ImageNet normalisation, ``fc`` = identity);
  without it the table says so rather than showing numbers;
- the demo judge's accuracy on colour, shape and background style (and their mean);
- seconds per image on this machine.

A render-vs-render row gives the floor (the same scenes, other texture seeds). Writes
``samplers.json``, ``samplers.md`` and ``samplers.png`` (FID vs steps, one line per sampler,
a second panel for the Inception FID when configured; drawn with Pillow, matplotlib is not a
dependency) into ``--out``. A sampler that raises is
recorded with its error and the run goes on.

This lives in ``tools/`` because it needs the offline demo world and judge, which the runtime
must not import (``tests/unit/test_layering.py``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results"
ATTRIBUTES = ("colour", "shape", "background")
MODEL = "builtin:demo"

__all__ = ["main", "evaluate", "draw_plot", "markdown_table", "Inception", "INCEPTION_ENV"]

INCEPTION_ENV = "GOUACHE_INCEPTION_WEIGHTS"
INCEPTION_FEATURES = "Inception-v3 pool features (2048-d; 299 bilinear, ImageNet normalisation)"


def _csv(kind: type, text: str) -> list[Any]:
    return [kind(part.strip()) for part in text.split(",") if part.strip()]


def _scenes_and_prompts(n: int) -> tuple[list[Any], list[str]]:
    from tools.demo.world import heldout_scenes, render

    pool = heldout_scenes(count_per_pair=5)
    scenes = [pool[i % len(pool)] for i in range(n)]
    return scenes, [render(s).caption for s in scenes]


def _renders(scenes: list[Any], offset: int) -> np.ndarray:
    from tools.demo.world import render

    return np.stack([render(replace(s, seed=s.seed + 7919 * (offset + i))).image
                     for i, s in enumerate(scenes)])  # fmt: skip


class _Clip:
    """The demo CLIP's L2-normalised image features, in batches."""

    def __init__(self, path: str) -> None:
        from transformers import CLIPModel

        self.model = CLIPModel.from_pretrained(path).eval()

    def features(self, images: np.ndarray) -> np.ndarray:
        import torch

        out = []
        with torch.no_grad():
            for i in range(0, len(images), 256):
                chunk = images[i : i + 256].astype(np.float32) / 127.5 - 1
                x = torch.from_numpy(chunk).permute(0, 3, 1, 2)
                f = self.model.get_image_features(pixel_values=x)
                f = f if isinstance(f, torch.Tensor) else f.pooler_output
                out.append(f.numpy())
        feats = np.concatenate(out).astype(np.float64)
        return feats / np.linalg.norm(feats, axis=1, keepdims=True).clip(1e-12)


class Inception:
    """Inception-v3's 2048-d average-pool features from a local state dict (never downloaded).

    ``torchvision.models.inception_v3(weights=None, init_weights=False, transform_input=True)``
    (what torchvision builds for its own ``IMAGENET1K_V1`` weights) with the state dict loaded
    strictly (with or without the ``AuxLogits`` head; ``fc.*`` ignored, ``fc`` is the identity);
    images (uint8 NHWC) are resized to 299x299 bilinear and normalised with the ImageNet mean
    and standard deviation. A missing file, a file that is not a state dict, or one whose keys
    or shapes are not Inception-v3's is a ``UserError`` naming what is wrong.
    """

    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self, path: str | Path) -> None:
        import torch
        from torchvision.models import inception_v3

        from gouache.errors import InvalidRequest

        path = Path(path).expanduser()
        self.path = path
        if not path.is_file():
            raise InvalidRequest(
                f"Inception weights: no file at {path} (--inception or {INCEPTION_ENV})."
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
            raise InvalidRequest(
                f"Inception weights: {path} is not a PyTorch state dict ({type(exc).__name__}); "
                "save one with torch.save(model.state_dict(), path)."
            ) from exc
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
        ):
            raise InvalidRequest(
                f"Inception weights: {path} holds a {type(state).__name__}, not a state dict "
                "(a mapping of parameter names to tensors)."
            )
        aux = any(k.startswith("AuxLogits.") for k in state)
        # transform_input: as torchvision does for its own weights (ImageNet-normalised input,
        # re-scaled inside to the [-1, 1] the ported Google weights expect). The classifier is
        # not used, so its shape (1000 or 1008 classes) does not matter.
        model = inception_v3(weights=None, aux_logits=aux, init_weights=False, transform_input=True)
        model.fc = torch.nn.Identity()
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        expected = model.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        shapes = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
        if missing or unexpected or shapes:
            parts = [f"{len(keys)} {what} (e.g. {', '.join(keys[:3])})"
                     for what, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                        ("keys of the wrong shape", shapes)) if keys]  # fmt: skip
            raise InvalidRequest(
                f"Inception weights: {path} is not a torchvision inception_v3 state dict: "
                + "; ".join(parts) + "."
            )
        model.load_state_dict(state)
        self.model = model.eval()

    def features(self, images: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        mean = torch.tensor(self.MEAN).view(1, 3, 1, 1)
        std = torch.tensor(self.STD).view(1, 3, 1, 1)
        out = []
        with torch.inference_mode():
            for i in range(0, len(images), 32):
                x = torch.from_numpy(images[i : i + 32].astype(np.float32) / 255).permute(0, 3, 1, 2)
                x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
                out.append(self.model((x - mean) / std).double().numpy())
        return np.concatenate(out)


def frechet_low_rank(a: np.ndarray, b: np.ndarray) -> float:
    """FID computed in sample space: exact, and cheap when there are fewer images than feature
    dimensions (n=200 against 2048-d Inception features).

    With centred ``Xa`` (m x d) and ``Xb`` (n x d), the non-zero eigenvalues of ``Ca Cb`` are
    the squared singular values of ``M = Xa Xb^T / sqrt((m-1)(n-1))``, so
    ``tr sqrt(Ca Cb)`` is the sum of M's singular values; ``tr Ca`` is ``|Xa|^2 / (m-1)``.
    """
    xa, xb = a - a.mean(0), b - b.mean(0)
    m, n = len(a), len(b)
    cross = np.linalg.svd(xa @ xb.T / math.sqrt((m - 1) * (n - 1)), compute_uv=False).sum()
    mean = ((a.mean(0) - b.mean(0)) ** 2).sum()
    return float(mean + (xa**2).sum() / (m - 1) + (xb**2).sum() / (n - 1) - 2 * cross)


def _generate(engine: Any, sampler: str, steps: int, prompts: list[str], guidance: float,
              size: int, batch: int) -> np.ndarray:  # fmt: skip
    from gouache.generation.loop.batch import BatchItem, BatchKey

    key = BatchKey(MODEL, "txt2img", size, size, steps, sampler, guidance)
    images = []
    for start in range(0, len(prompts), batch):
        items = [BatchItem(f"{i}", prompts[i], seed=i) for i in range(start, min(start + batch, len(prompts)))]
        for result in engine.generate(key, items):
            if result.error is not None:
                raise result.error
            images.extend(np.asarray(im.convert("RGB")) for im in result.images)
    return np.stack(images)


def _score(judge: Any, clip: _Clip, images: np.ndarray, scenes: list[Any],
           ref_features: np.ndarray, inception: Inception | None = None,
           ref_inception: np.ndarray | None = None) -> dict[str, Any]:  # fmt: skip
    from tools.demo.judge import judge_batch, truth
    from tools.demo.metrics import frechet_distance, kernel_inception_distance

    judged, expected = judge_batch(judge, images), truth(scenes)
    accuracy = {k: float(np.mean([a == b for a, b in zip(judged[k], expected[k], strict=True)]))
                for k in ATTRIBUTES}  # fmt: skip
    accuracy["mean"] = float(np.mean([accuracy[k] for k in ATTRIBUTES]))
    feats = clip.features(images)
    out = {"fid_clip": frechet_distance(feats, ref_features),
           "kid_clip": kernel_inception_distance(feats, ref_features)}  # fmt: skip
    if inception is not None and ref_inception is not None:
        pool = inception.features(images)
        out["fid_inception"] = frechet_low_rank(pool, ref_inception)
        out["kid_inception"] = kernel_inception_distance(pool, ref_inception)
    return {**out, "judge_accuracy": accuracy}


def evaluate(samplers: list[str], steps: list[int], n: int, *, batch: int = 64,
             guidance: float | None = None, log: Any = None, done: list[dict[str, Any]] | None = None,
             save: Any = None, inception: Inception | None = None) -> dict[str, Any]:  # fmt: skip
    """Every (sampler, steps) cell on builtin:demo; the report that ``main`` writes.

    ``done`` rows (from an earlier, interrupted run with the same settings) are kept and not
    recomputed; ``save(report)`` is called after every cell, so a long run leaves results.
    ``inception``: also FID/KID on its pool features (``fid_inception``, ``kid_inception``).
    """
    from gouache.config import builtin_demo_spec
    from gouache.generation.loop.engine import Engine
    from gouache.generation.models import ModelRegistry
    from tools.demo.judge import load_judge

    spec = builtin_demo_spec()
    guidance = spec.default_guidance if guidance is None else guidance
    size = spec.default_width
    registry = ModelRegistry({MODEL: spec}, cache_dir=ROOT / "data" / "models", device="cpu")
    model = registry.get(MODEL)
    assert model.clip_path is not None
    engine = Engine(registry)
    judge = load_judge(Path(model.clip_path).parent / "judge")
    clip = _Clip(model.clip_path)
    scenes, prompts = _scenes_and_prompts(n)
    references = _renders(scenes, 0)
    ref_features = clip.features(references)
    ref_inception = inception.features(references) if inception is not None else None
    score = lambda images: _score(judge, clip, images, scenes, ref_features, inception, ref_inception)  # noqa: E731
    floor = score(_renders(scenes, n))
    import torch

    report: dict[str, Any] = {
        "model": MODEL, "n": n, "prompts": len(set(prompts)), "guidance": guidance,
        "size": f"{size}x{size}", "features": "demo CLIP image features, L2-normalised",
        "reference": f"{n} renders of the same held-out scenes (other texture seeds)",
        "inception": _inception_info(inception),
        "rendered_floor": floor, "rows": [],
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version(), "torch": torch.__version__},
    }  # fmt: skip
    rows: list[dict[str, Any]] = report["rows"]
    earlier = {(r["sampler"], r["steps"]): r for r in done or ()}
    for sampler in samplers:
        for count in steps:
            if (sampler, count) in earlier:
                rows.append(earlier[(sampler, count)])
                continue
            if save is not None and rows:
                save(report)
            started = time.perf_counter()
            try:
                images = _generate(engine, sampler, count, prompts, guidance, size, batch)
            except Exception as exc:  # noqa: BLE001 - a broken sampler is a result, not a crash
                rows.append({"sampler": sampler, "steps": count, "error": f"{type(exc).__name__}: {exc}"})
                if log:
                    log(f"{sampler} {count}: {type(exc).__name__}: {exc}")
                continue
            seconds = (time.perf_counter() - started) / n
            row = {"sampler": sampler, "steps": count, **score(images), "seconds_per_image": seconds}
            rows.append(row)
            if log:
                extra = f" FID (Inception) {row['fid_inception']:.3f}" if "fid_inception" in row else ""
                log(f"{sampler} {count}: FID {row['fid_clip']:.4f} KID {row['kid_clip']:.5f}{extra} "
                    f"judge {row['judge_accuracy']['mean']:.3f} ({seconds:.3f} s/image)")
    return report


def _inception_info(inception: Inception | None) -> dict[str, Any] | None:
    """What ``--resume`` compares: the features and the weights file (path, size, SHA-256)."""
    if inception is None:
        return None
    import hashlib

    digest = hashlib.sha256(inception.path.read_bytes()).hexdigest()
    return {"features": INCEPTION_FEATURES, "weights": str(inception.path),
            "bytes": inception.path.stat().st_size, "sha256": digest}  # fmt: skip


def markdown_table(report: dict[str, Any]) -> str:
    inc = bool(report.get("inception"))
    note = (f"Inception: {report['inception']['features']} from `{Path(report['inception']['weights']).name}`."
            if inc else
            "Inception features were not configured (`--inception PATH` or "
            f"`{INCEPTION_ENV}`: a torchvision inception_v3 state dict), so there are no "
            "Inception FID/KID columns.")  # fmt: skip
    inc_head, inc_rule = (" FID (Inception) | KID (Inception) |", " ---: | ---: |") if inc else ("", "")
    lines = [
        f"Samplers on {report['model']}: n={report['n']} images ({report['prompts']} held-out "
        f"prompts), guidance {report['guidance']}, {report['size']}; FID/KID on {report['features']}.",
        note,
        "",
        f"| sampler | steps | FID (CLIP) | KID (CLIP) |{inc_head} judge colour | judge shape | "
        "judge background | judge mean | s/image |",
        f"| --- | ---: | ---: | ---: |{inc_rule} ---: | ---: | ---: | ---: | ---: |",
    ]

    def figures(row: dict[str, Any]) -> str:
        acc = row["judge_accuracy"]
        extra = f" {row['fid_inception']:.3f} | {row['kid_inception']:.5f} |" if inc else ""
        return (f"{row['fid_clip']:.4f} | {row['kid_clip']:.5f} |{extra} {acc['colour']:.3f} | "
                f"{acc['shape']:.3f} | {acc['background']:.3f} | {acc['mean']:.3f}")  # fmt: skip

    lines.append(f"| renders (floor) | - | {figures(report['rendered_floor'])} | - |")
    blanks = " |" * (8 if inc else 6)
    for row in report["rows"]:
        if "error" in row:
            lines.append(f"| {row['sampler']} | {row['steps']} | failed: {row['error'][:60]} |{blanks}")
            continue
        lines.append(f"| {row['sampler']} | {row['steps']} | {figures(row)} | {row['seconds_per_image']:.3f} |")
    return "\n".join(lines) + "\n"


_PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
            (140, 86, 75), (227, 119, 194), (127, 127, 127)]  # fmt: skip


def draw_plot(report: dict[str, Any], width: int = 720, height: int = 440) -> Any:
    """FID vs steps, one line per sampler (log-scaled steps axis), as a Pillow image; with
    Inception features configured, a second panel below for the Inception FID."""
    from PIL import Image, ImageDraw

    panels = [("fid_clip", "FID (demo CLIP)")]
    if report.get("inception"):
        panels.append(("fid_inception", "FID (Inception-v3 pool)"))
    image = Image.new("RGB", (width, height * len(panels)), "white")
    draw = ImageDraw.Draw(image)
    for k, (metric, title) in enumerate(panels):
        _draw_panel(draw, report, metric, title, 0, k * height, width, height)
    return image


def _draw_panel(draw: Any, report: dict[str, Any], metric: str, title: str, x0: int, y0: int,
                width: int, height: int) -> None:  # fmt: skip
    from PIL import ImageFont

    font = ImageFont.load_default()
    rows = [r for r in report["rows"] if "error" not in r and metric in r]
    left, right, top, bottom = x0 + 70, x0 + width - 150, y0 + 30, y0 + height - 50
    draw.text((left, y0 + 8), f"{title} vs steps, {report['model']}, n={report['n']}", fill="black", font=font)
    if not rows:
        draw.text((left, top + 20), "no sampler produced images", fill="black", font=font)
        return
    steps = sorted({r["steps"] for r in rows})
    floor = report["rendered_floor"][metric]
    fids = [r[metric] for r in rows] + [floor]
    lo, hi = 0.0, max(fids) * 1.1 or 1.0
    s_lo, s_hi = math.log(min(steps)), math.log(max(steps))

    def xy(step: float, fid: float) -> tuple[float, float]:
        fx = 0.5 if s_hi == s_lo else (math.log(step) - s_lo) / (s_hi - s_lo)
        return left + fx * (right - left), bottom - (fid - lo) / (hi - lo) * (bottom - top)

    draw.rectangle([left, top, right, bottom], outline="black")
    for k in range(6):
        v = lo + (hi - lo) * k / 5
        y = bottom - (bottom - top) * k / 5
        draw.line([left - 4, y, left, y], fill="black")
        draw.text((x0 + 4, y - 6), f"{v:.4g}", fill="black", font=font)
    for s in steps:
        x, _ = xy(s, 0)
        draw.line([x, bottom, x, bottom + 4], fill="black")
        draw.text((x - 6, bottom + 8), str(s), fill="black", font=font)
    draw.text(((left + right) / 2 - 15, bottom + 26), "steps", fill="black", font=font)
    _, floor_y = xy(steps[0], floor)
    draw.line([left, floor_y, right, floor_y], fill=(160, 160, 160))
    draw.text((right + 10, floor_y - 6), "renders (floor)", fill=(120, 120, 120), font=font)
    samplers = list(dict.fromkeys(r["sampler"] for r in rows))
    for n, sampler in enumerate(samplers):
        colour = _PALETTE[n % len(_PALETTE)]
        points = [xy(r["steps"], r[metric]) for r in sorted(rows, key=lambda r: r["steps"])
                  if r["sampler"] == sampler]  # fmt: skip
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        ly = top + 10 + 16 * n
        draw.line([right + 10, ly + 6, right + 30, ly + 6], fill=colour, width=2)
        draw.text((right + 36, ly), sampler, fill="black", font=font)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gouache evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--samplers", default="ddpm,ddim,pndm", help="comma-separated sampler names")
    p.add_argument("--steps", default="10,25,50", help="comma-separated step counts")
    p.add_argument("--n", type=int, default=200, help="images per sampler and step count")
    p.add_argument("--batch", type=int, default=64, help="images per engine call")
    p.add_argument("--guidance", type=float, default=None, help="default: the model's")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for samplers.{json,md,png}")
    p.add_argument("--resume", action="store_true",
                   help="keep the cells of an earlier run with the same --n in --out/samplers.json")
    p.add_argument("--inception", type=Path, default=os.environ.get(INCEPTION_ENV) or None,
                   help="a torchvision inception_v3 state dict (.pth) for FID/KID on Inception "
                        f"pool features too (default: ${INCEPTION_ENV}; nothing is downloaded)")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.n < 2:
        p.error("--n must be at least 2 (FID needs a covariance)")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from gouache.generation.loop.samplers import sampler_entry

    samplers, steps = _csv(str, args.samplers), _csv(int, args.steps)
    from gouache.errors import UserError

    try:
        for name in samplers:
            sampler_entry(name)  # unknown names fail before any work, with the list of choices
        inception = Inception(args.inception) if args.inception else None  # bad weights, too
    except UserError as exc:
        print(f"gouache evaluate: {exc.message}", file=sys.stderr)
        return 2
    started = time.time()
    done: list[dict[str, Any]] = []
    previous = args.out / "samplers.json"
    if args.resume and previous.is_file():
        old = json.loads(previous.read_text())
        if old.get("n") == args.n and old.get("inception") == _inception_info(inception):
            done = [r for r in old["rows"] if "error" not in r]

    def save(report: dict[str, Any]) -> None:
        report["seconds"] = time.time() - started
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "samplers.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.out / "samplers.md").write_text(markdown_table(report))
        draw_plot(report).save(args.out / "samplers.png")

    report = evaluate(samplers, steps, args.n, batch=args.batch, guidance=args.guidance,
                      log=lambda line: print(line, file=sys.stderr, flush=True), done=done,
                      save=save, inception=inception)  # fmt: skip
    save(report)
    print(markdown_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How well the shipped demo model draws what it is asked, judged independently.

    .venv/bin/python benchmarks/demo_quality.py [--models gouache/models/demo] [--seeds 8]

Generates every held-out prompt (colour/shape pairs never seen in training) with 8 seeds
through ``StableDiffusionPipeline.from_pretrained`` and DDIM at the model's defaults, then:
- colour, shape and background-style accuracy, read by the judge (a CNN trained only on
  rendered scenes) -- and the judge's own accuracy on rendered held-out scenes, for scale;
- depth adherence: /depth outputs whose judged object position and size are the depth map's,
  with the prompt and with an empty one, beside unconditioned outputs and the renders;
- the demo depth estimator: on held-out renders, whether the estimated depth's layout (the
  near region's position and overlap) matches the true map's, and whether /depth from the
  *estimate* follows the scene's layout (the judge), beside /depth from the true map
  (``--only depth-estimator`` measures just this and updates the results file in place);
- Vendi of the 8 seeds per prompt, FID and KID against as many renders of the same prompts,
  and CLIP score, all on the demo CLIP's (L2-normalised) image features;
- seconds per image (batch 1, default steps) on this machine.
Writes benchmarks/results/demo_quality.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder leads sys.path, and its queue.py would shadow the stdlib's.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: tools.demo

import argparse
import json
import os
import platform
import statistics
import time
from dataclasses import replace

import numpy as np
import torch

from gouache.config import builtin_demo_spec
from tools.demo.judge import judge_batch, load_judge, rendered_accuracy, truth
from tools.demo.metrics import (
    frechet_distance,
    kernel_inception_distance,
    layout_iou,
    vendi,
)
from tools.demo.world import POSITIONS, Scene, depth_to_image, heldout_scenes, render

ROOT = Path(__file__).resolve().parents[1]
THRESHOLDS = {"colour": 0.90, "shape": 0.80, "background": 0.80, "depth_adherence": 0.80,
              "estimated_layout": 0.80, "depth_from_estimate": 0.80}


def load_pipelines(models: Path):  # noqa: ANN201
    from diffusers import (
        ControlNetModel,
        DDIMScheduler,
        StableDiffusionControlNetPipeline,
        StableDiffusionPipeline,
    )

    pipe = StableDiffusionPipeline.from_pretrained(models / "pipeline", safety_checker=None)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    control = None
    if (models / "controlnet-depth").is_dir():
        control = StableDiffusionControlNetPipeline(
            **{k: v for k, v in pipe.components.items() if k in
               ("vae", "text_encoder", "tokenizer", "unet", "scheduler")},
            controlnet=ControlNetModel.from_pretrained(models / "controlnet-depth"),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
        control.set_progress_bar_config(disable=True)
    return pipe, control


SPEC = builtin_demo_spec()


def generate(pipe, prompts: list[str], seeds: list[int], batch: int = 16, **kw) -> np.ndarray:  # noqa: ANN001, ANN003
    """One image per (prompt, seed), batched; each image has its own generator."""
    spec = SPEC
    jobs = [(p, s) for p in prompts for s in seeds]
    out = []
    for i in range(0, len(jobs), batch):
        chunk = jobs[i : i + batch]
        extra = {k: (v[i : i + batch] if isinstance(v, list) else v) for k, v in kw.items()}
        result = pipe(
            [p for p, _ in chunk], num_inference_steps=spec.default_steps,
            guidance_scale=spec.default_guidance, height=spec.default_height,
            width=spec.default_width, output_type="np",
            generator=[torch.Generator().manual_seed(s) for _, s in chunk], **extra,
        ).images
        out.append(np.clip(np.rint(result * 255), 0, 255).astype(np.uint8))
    return np.concatenate(out)


def accuracy(judge, images: np.ndarray, scenes: list[Scene], seeds: int) -> dict[str, float]:  # noqa: ANN001
    judged = judge_batch(judge, images)
    return {k: float(np.mean([judged[k][i] == v[i // seeds] for i in range(len(images))]))
            for k, v in truth(scenes).items()}


def clip_features(models: Path, images: np.ndarray, prompts: list[str]):  # noqa: ANN201
    from transformers import CLIPModel, CLIPTokenizer

    if not (models / "clip").is_dir():
        return None, None
    model = CLIPModel.from_pretrained(models / "clip").eval()
    tokenizer = CLIPTokenizer.from_pretrained(models / "clip")
    with torch.no_grad():
        x = torch.from_numpy(images.astype(np.float32) / 127.5 - 1).permute(0, 3, 1, 2)
        img = model.get_image_features(pixel_values=x)
        ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids
        txt = model.get_text_features(input_ids=ids)
    img = img if isinstance(img, torch.Tensor) else img.pooler_output
    txt = txt if isinstance(txt, torch.Tensor) else txt.pooler_output
    return img.numpy(), txt.numpy()


def clip_score(img: np.ndarray, txt: np.ndarray) -> float:
    a = img / np.linalg.norm(img, axis=1, keepdims=True)
    b = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    return float(100 * np.mean((a * b).sum(1).clip(0)))


def seconds_per_image(pipe, repeats: int = 5) -> dict[str, float]:  # noqa: ANN001
    generate(pipe, ["a red circle in the center on a plain blue background"], [0])  # warm-up
    times = []
    for r in range(repeats):
        t = time.perf_counter()
        generate(pipe, ["a red circle in the center on a plain blue background"], [r])
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    generate(pipe, ["a red circle in the center on a plain blue background"], list(range(8)), batch=8)
    return {"batch1_median": statistics.median(times), "batch1_max": max(times),
            "batch8_per_image": (time.perf_counter() - t) / 8}


def follows_layout(judge, images: np.ndarray, scenes: list[Scene], per: int) -> float:  # noqa: ANN001
    """Share of images whose judged object position and size are those of the depth map's scene."""
    judged, expected = judge_batch(judge, images), truth(scenes)
    ok = [judged["position"][i] == expected["position"][i // per] and
          judged["size"][i] == expected["size"][i // per] for i in range(len(images))]
    return float(np.mean(ok))


def depth_adherence(judge, control, pipe, scenes: list[Scene], seeds: list[int]) -> dict:  # noqa: ANN001
    """/depth outputs that follow the depth map's layout, with and without a prompt.

    The empty prompt isolates the ControlNet; the unconditioned and rendered rows give scale.
    """
    rendered = [render(s) for s in scenes]
    prompts, n = [r.caption for r in rendered], len(seeds)
    result: dict = {
        "criterion": "judged position and size equal the depth map scene's",
        "rendered": follows_layout(judge, np.stack([r.image for r in rendered]), scenes, 1),
        "unconditioned": follows_layout(judge, generate(pipe, prompts, seeds), scenes, n),
        "controlnet": None, "controlnet_empty_prompt": None, "controlnet_mean_layout_iou": None,
    }
    if control is not None:
        images = [depth_to_image(r.depth) for r in rendered for _ in seeds]
        out = generate(control, prompts, seeds, image=images)
        result["controlnet"] = follows_layout(judge, out, scenes, n)
        result["controlnet_mean_layout_iou"] = float(np.mean(
            [layout_iou(im, rendered[i // n].depth >= 0.5) for i, im in enumerate(out)]))
        empty = generate(control, [""] * len(prompts), seeds, image=images)
        result["controlnet_empty_prompt"] = follows_layout(judge, empty, scenes, n)
    return result


def _position(mask: np.ndarray) -> str | None:
    """The world's position word nearest to a mask's centroid."""
    if not mask.any():
        return None
    ys, xs = np.nonzero(mask)
    cy, cx = (ys.mean() + 0.5) / mask.shape[0], (xs.mean() + 0.5) / mask.shape[1]
    return min(POSITIONS, key=lambda p: (POSITIONS[p][0] - cx) ** 2 + (POSITIONS[p][1] - cy) ** 2)


def estimator_quality(models: Path, judge, control, scenes: list[Scene], seeds: list[int]) -> dict:  # noqa: ANN001
    """The demo depth estimator on held-out renders (colour/shape pairs never trained on).

    Layout match: the estimated near region (depth >= 0.5) has the true one's position word
    (nearest to its centroid) and overlaps it with IoU >= 0.5. Then /depth is generated from
    the estimate and from the true map, and the judge reads position and size.
    """
    from PIL import Image

    from gouache.generation.estimators import DemoEstimator

    estimator = DemoEstimator(str(models / "depth-estimator"), device=torch.device("cpu"))
    rendered = [render(s) for s in scenes]
    estimates = [estimator.estimate(Image.fromarray(r.image)) for r in rendered]
    ious, matches = [], []
    for scene, r, est in zip(scenes, rendered, estimates, strict=True):
        a, b = est >= 0.5, r.depth >= 0.5
        iou = float((a & b).sum() / max((a | b).sum(), 1))
        ious.append(iou)
        matches.append(iou >= 0.5 and _position(a) == scene.layout)
    result: dict = {
        "criterion": "estimated near region: same position word as the true map's and IoU >= 0.5",
        "heldout_scenes": len(scenes),
        "layout_match": float(np.mean(matches)),
        "mean_foreground_iou": float(np.mean(ious)),
        "mean_abs_error": float(np.mean([np.abs(e - r.depth).mean() for e, r in zip(estimates, rendered, strict=True)])),
        "depth_from_estimate": None, "depth_from_true_map": None, "seeds_per_scene": len(seeds),
    }  # fmt: skip
    if control is not None:
        prompts, n = [r.caption for r in rendered], len(seeds)
        from_estimate = [depth_to_image(e) for e in estimates for _ in seeds]
        from_truth = [depth_to_image(r.depth) for r in rendered for _ in seeds]
        result["depth_from_estimate"] = follows_layout(
            judge, generate(control, prompts, seeds, image=from_estimate), scenes, n)
        result["depth_from_true_map"] = follows_layout(
            judge, generate(control, prompts, seeds, image=from_truth), scenes, n)
    training = models / "TRAINING.json"
    if training.is_file():
        result["training"] = json.loads(training.read_text()).get("depth_estimator")
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", type=Path, default=ROOT / "gouache/models/demo")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--per-pair", type=int, default=5, help="held-out prompts per colour/shape pair")
    p.add_argument("--depth-seeds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--guidance", type=float, default=None, help="override the spec's default")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/demo_quality.json")
    p.add_argument("--only", choices=["all", "depth-estimator"], default="all",
                   help="depth-estimator: measure only the estimator, updating --out in place")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.guidance is not None:
        SPEC.default_guidance = args.guidance
    started = time.time()
    pipe, control = load_pipelines(args.models)
    judge = load_judge(args.models / "judge")
    scenes = heldout_scenes(count_per_pair=args.per_pair)
    depth_seeds = list(range(args.depth_seeds))
    if args.only == "depth-estimator":
        report = json.loads(args.out.read_text()) if args.out.is_file() else {}
        report["depth_estimator"] = estimator_quality(args.models, judge, control, scenes, depth_seeds)
        _estimator_passes(report)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report["depth_estimator"], indent=2))
        return report
    prompts = [render(s).caption for s in scenes]
    seeds = list(range(args.seeds))
    images = generate(pipe, prompts, seeds)
    judged = accuracy(judge, images, scenes, args.seeds)
    # Reference: each prompt rendered as often as it is generated (new texture seeds).
    renders = np.stack([render(replace(s, seed=s.seed + 7919 * k)).image
                        for s in scenes for k in seeds])
    report: dict = {
        "held_out_prompts": len(prompts), "seeds_per_prompt": args.seeds,
        "sampling": {"scheduler": "DDIM", "steps": SPEC.default_steps,
                     "guidance": SPEC.default_guidance, "size": SPEC.default_width},
        "judged_accuracy": judged,
        "judge_accuracy_on_rendered_heldout": rendered_accuracy(judge),
        "depth_adherence": depth_adherence(judge, control, pipe, scenes, seeds[: args.depth_seeds]),
    }
    report["depth_estimator"] = estimator_quality(args.models, judge, control, scenes, depth_seeds)
    img_f, txt_f = clip_features(args.models, np.concatenate([images, renders]), prompts)
    if img_f is not None:
        img_f = img_f / np.linalg.norm(img_f, axis=1, keepdims=True)  # cosine geometry, as CLIP
        gen_f, ref_f = img_f[: len(images)], img_f[len(images):]
        per_prompt = [vendi(gen_f[i : i + args.seeds]) for i in range(0, len(gen_f), args.seeds)]
        rendered_vs = [vendi(ref_f[i : i + args.seeds]) for i in range(0, len(ref_f), args.seeds)]
        report["vendi_clip"] = {"mean": float(np.mean(per_prompt)), "n": args.seeds,
                                "mean_over_n": float(np.mean(per_prompt)) / args.seeds,
                                "rendered_mean": float(np.mean(rendered_vs))}
        report["fid_clip"] = frechet_distance(gen_f, ref_f)
        report["kid_clip"] = kernel_inception_distance(gen_f, ref_f)
        report["clip_score"] = {"generated": clip_score(gen_f, np.repeat(txt_f, args.seeds, 0)),
                                "rendered": clip_score(ref_f, np.repeat(txt_f, args.seeds, 0))}
    report["seconds_per_image"] = seconds_per_image(pipe)
    adherence = report["depth_adherence"]["controlnet"]
    report["passes"] = {
        **{k: judged[k] >= THRESHOLDS[k] for k in ("colour", "shape", "background")},
        "depth_adherence": adherence is not None and adherence >= THRESHOLDS["depth_adherence"],
        "under_2s_per_image": report["seconds_per_image"]["batch1_median"] < 2.0,
    }
    _estimator_passes(report)
    training = args.models / "TRAINING.json"
    report["training"] = json.loads(training.read_text()) if training.is_file() else None
    report["thresholds"] = THRESHOLDS
    report["machine"] = {"cpus": os.cpu_count(), "torch_threads": args.threads,
                         "load_average": os.getloadavg(), "python": platform.python_version(),
                         "torch": torch.__version__}
    report["benchmark_seconds"] = time.time() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("judged_accuracy", "depth_adherence", "passes")}, indent=2))
    return report


def _estimator_passes(report: dict) -> None:
    est = report["depth_estimator"]
    passes = report.setdefault("passes", {})
    passes["estimated_layout"] = est["layout_match"] >= THRESHOLDS["estimated_layout"]
    follows = est["depth_from_estimate"]
    passes["depth_from_estimate"] = follows is not None and follows >= THRESHOLDS["depth_from_estimate"]
    report["thresholds"] = THRESHOLDS


if __name__ == "__main__":
    main()

"""How well the shipped demo model draws what it is asked, judged independently.

    .venv/bin/python benchmarks/demo_quality.py [--models gouache/models/demo] [--seeds 8]

Generates every held-out prompt (colour/shape pairs never seen in training) with 8 seeds
through ``StableDiffusionPipeline.from_pretrained`` and DDIM at the model's defaults, then:
- colour, shape and background-style accuracy, read by the judge (a CNN trained only on
  rendered scenes) -- and the judge's own accuracy on rendered held-out scenes, for scale;
- depth adherence: /depth outputs whose judged object position and size are the depth map's,
  with the prompt and with an empty one, beside unconditioned outputs and the renders;
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
from tools.demo.world import Scene, depth_to_image, heldout_scenes, render

ROOT = Path(__file__).resolve().parents[1]
THRESHOLDS = {"colour": 0.90, "shape": 0.80, "background": 0.80, "depth_adherence": 0.80}


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


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", type=Path, default=ROOT / "gouache/models/demo")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--per-pair", type=int, default=5, help="held-out prompts per colour/shape pair")
    p.add_argument("--depth-seeds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--guidance", type=float, default=None, help="override the spec's default")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/demo_quality.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.guidance is not None:
        SPEC.default_guidance = args.guidance
    started = time.time()
    pipe, control = load_pipelines(args.models)
    judge = load_judge(args.models / "judge")
    scenes = heldout_scenes(count_per_pair=args.per_pair)
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


if __name__ == "__main__":
    main()

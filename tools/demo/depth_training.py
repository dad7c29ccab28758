"""Trains the demo world's depth estimator: ``python -m tools.demo.depth_training``.

    python -m tools.demo.depth_training --out gouache/models/demo [--minutes 20] [--resume]

A ``DemoDepthNet`` (gouache/generation/demo_depth_net.py) regresses the exact depth map that
``world.render`` returns for each scene, from the rendered RGB image alone: L1 loss, AdamW,
cosine learning rate, horizontal flips (the world's depth is symmetric left-right, not up-down:
the ground plane is nearer at the bottom), EMA weights exported as safetensors to
``OUT/depth-estimator/``. Batches are a pure function of (seed, step), so ``--resume`` sees the
data an uninterrupted run would have seen. Held-out scenes (``world.heldout_scenes``, colour and
shape pairs never drawn in training) are never trained on; benchmarks/demo_quality.py measures
the estimator on them.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from gouache.generation.demo_depth_net import DemoDepthNet

from .export import record, write_atomically
from .training import Clock, Ema, checkpoint, log, make_batch, resume, steps
from .world import heldout_scenes, render

__all__ = ["main", "train_depth_estimator", "heldout_error"]


def heldout_error(model: DemoDepthNet, count_per_pair: int = 2) -> dict[str, float]:
    """Mean absolute depth error and foreground IoU (depth >= 0.5) on held-out renders."""
    rendered = [render(s) for s in heldout_scenes(count_per_pair=count_per_pair)]
    x = torch.from_numpy(np.stack([r.image for r in rendered]).astype(np.float32) / 255.0)
    with torch.no_grad():
        est = model(x.permute(0, 3, 1, 2)).numpy()
    true = np.stack([r.depth for r in rendered])
    a, b = est >= 0.5, true >= 0.5
    iou = (a & b).sum((1, 2)) / np.maximum((a | b).sum((1, 2)), 1)
    return {"mae": float(np.abs(est - true).mean()), "foreground_iou": float(iou.mean())}


def train_depth_estimator(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    model = DemoDepthNet(width=args.width)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    ema = Ema(model, decay=0.995)
    parts = {"model": model, "opt": opt, "ema": ema}
    ckpt = args.workdir / "depth-estimator.pt"
    start = resume(ckpt, "depth-estimator", parts) if args.resume else 0
    clock, t0, done, smooth = Clock(args.minutes), time.monotonic(), start, 0.0

    def export(step: int) -> None:
        scores = heldout_error(ema.module)
        write_atomically(args.out / "depth-estimator", ema.module.save_pretrained)
        record(args.out, "depth_estimator", {
            "seed": args.seed, "steps": step, "batch": args.batch, "lr": args.lr,
            "width": args.width, "images": step * args.batch, "heldout": scores,
            "parameters": sum(p.numel() for p in model.parameters())})  # fmt: skip
        log(f"exported depth estimator at step {step}: held-out {scores}")

    model.train()
    for step in steps(start, args.steps, clock):
        lr = args.lr * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        batch = make_batch(args.seed + 77, step, args.batch)
        images = (batch.images + 1.0) / 2.0
        depth = batch.depth[:, 0]
        flip = torch.rand(args.batch, generator=torch.Generator().manual_seed(step)) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        depth = torch.where(flip[:, None, None], depth.flip(-1), depth)
        loss = (model(images) - depth).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update(model)
        done = step + 1
        smooth = 0.95 * smooth + 0.05 * loss.item() if step > start else loss.item()
        if step % 50 == 0:
            rate = (step + 1 - start) * args.batch / (time.monotonic() - t0)
            log(f"depth step {step} loss {smooth:.4f} lr {lr:.5f} ({rate:.1f} images/s)")
        if clock.every("checkpoint", 120):
            checkpoint(ckpt, parts, done)
            export(done)
    checkpoint(ckpt, parts, done)
    export(done)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("gouache/models/demo"))
    p.add_argument("--workdir", type=Path, default=Path("data/demo-train"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--minutes", type=float, default=None)
    p.add_argument("--steps", type=int, default=2500)  # the shipped run: 2500 (about 20 min on 1 core)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    train_depth_estimator(args)


if __name__ == "__main__":
    main()

"""An attribute classifier trained only on *rendered* scenes, used to judge *generated* ones.

Independent of every generative model: it never sees a generated image, so a high judged
accuracy means the generator draws what the world draws. It reads one-shape scenes: the
shape's colour and kind, the background's style and colour.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .components import RESOLUTION
from .world import BACKGROUNDS, COLOURS, POSITIONS, SHAPES, SIZES, render, sample_scene

__all__ = ["HEADS", "Judge", "train_judge", "load_judge", "save_judge", "judge_batch", "rendered_accuracy",
           "truth"]

HEADS: dict[str, tuple[str, ...]] = {
    "colour": tuple(COLOURS),
    "shape": SHAPES,
    "background": BACKGROUNDS,
    "bg_colour": tuple(COLOURS),
    "position": tuple(POSITIONS),
    "size": tuple(SIZES),
}


class Judge(nn.Module):
    """A small CNN with one linear head per attribute."""

    def __init__(self) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

        self.features = nn.Sequential(block(3, 32), nn.MaxPool2d(2), block(32, 64), nn.MaxPool2d(2),
                                      block(64, 96), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.heads = nn.ModuleDict({k: nn.Linear(96, len(v)) for k, v in HEADS.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``images``: (B, 3, H, W) in [-1, 1]."""
        h = self.features(images)
        return {k: head(h) for k, head in self.heads.items()}


def _labelled_batch(seed: int, step: int, size: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    rng = np.random.default_rng([seed, step, 11])
    scenes = [sample_scene(int(s), "any", n_shapes=1) for s in rng.integers(0, 2**62, size)]
    images = np.stack([render(s, RESOLUTION).image for s in scenes]).astype(np.float32) / 127.5 - 1
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    labels = {
        "colour": [HEADS["colour"].index(s.shapes[0].colour) for s in scenes],
        "shape": [SHAPES.index(s.shapes[0].kind) for s in scenes],
        "background": [BACKGROUNDS.index(s.background) for s in scenes],
        "bg_colour": [HEADS["bg_colour"].index(s.bg_colour) for s in scenes],
        "position": [HEADS["position"].index(s.layout) for s in scenes],
        "size": [HEADS["size"].index(s.shapes[0].size) for s in scenes],
    }
    return x, {k: torch.tensor(v) for k, v in labels.items()}


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mild blur and noise, so generator artefacts do not fool a judge of clean renders."""
    blur = torch.rand(x.shape[0], 1, 1, 1, generator=gen) * 0.5
    soft = nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    x = x * (1 - blur) + soft * blur
    return x + torch.randn(x.shape, generator=gen) * torch.rand(x.shape[0], 1, 1, 1, generator=gen) * 0.1


def train_judge(steps: int = 1500, batch: int = 64, seed: int = 123) -> Judge:
    """Trains on one-shape rendered scenes of every split (it is a judge, not a generator)."""
    torch.manual_seed(seed)
    judge, gen = Judge().train(), torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(judge.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    for step in range(steps):
        x, labels = _labelled_batch(seed, step, batch)
        logits = judge(_augment(x, gen))
        loss = sum(nn.functional.cross_entropy(logits[k], labels[k]) for k in HEADS)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return judge.eval()


def save_judge(judge: Judge, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in judge.state_dict().items()}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"heads": HEADS, "resolution": RESOLUTION}, indent=2))


def load_judge(folder: Path) -> Judge:
    judge = Judge()
    judge.load_state_dict(load_file(folder / "model.safetensors"))
    return judge.eval()


@torch.no_grad()
def judge_batch(judge: Judge, images: np.ndarray) -> dict[str, list[str]]:
    """Judged attribute names for (B, H, W, 3) uint8 images of any size (resized to 32)."""
    x = torch.from_numpy(images.astype(np.float32) / 127.5 - 1).permute(0, 3, 1, 2)
    if x.shape[-1] != RESOLUTION:
        x = nn.functional.interpolate(x, size=(RESOLUTION, RESOLUTION), mode="area")
    logits = judge(x)
    return {k: [HEADS[k][i] for i in logits[k].argmax(1).tolist()] for k in HEADS}


def rendered_accuracy(judge: Judge, count_per_pair: int = 10) -> dict[str, float]:
    """Accuracy on rendered held-out scenes: how far the judge itself can be trusted."""
    from .world import heldout_scenes

    scenes = heldout_scenes(count_per_pair=count_per_pair, seed=77_000)
    images = np.stack([render(s, RESOLUTION).image for s in scenes])
    judged = judge_batch(judge, images)
    return {k: float(np.mean([a == b for a, b in zip(judged[k], truth(scenes)[k], strict=True)]))
            for k in HEADS}


def truth(scenes: list) -> dict[str, list[str]]:
    """What the judge should answer for one-shape ``scenes``."""
    return {"colour": [s.shapes[0].colour for s in scenes], "shape": [s.shapes[0].kind for s in scenes],
            "background": [s.background for s in scenes], "bg_colour": [s.bg_colour for s in scenes],
            "position": [s.layout for s in scenes], "size": [s.shapes[0].size for s in scenes]}


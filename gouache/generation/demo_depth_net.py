"""The demo world's depth estimator network: a small fully convolutional encoder-decoder.

Trained offline by ``tools/demo/depth_training.py`` on the procedural world's (render, exact
depth) pairs and shipped as ``gouache/models/demo/depth-estimator/`` (``config.json`` +
``model.safetensors``). It reads an RGB image in [0, 1] at the world's resolution and returns
depth in [0, 1] with near = bright, the ControlNet convention. Only torch: no hub, no pickles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["DemoDepthNet", "CONFIG_NAME", "WEIGHTS_NAME"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(4, cout), nn.SiLU(),
        nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(4, cout), nn.SiLU(),
    )  # fmt: skip


class DemoDepthNet(nn.Module):
    """U-Net-shaped depth regressor: widths ``w, 2w, 3w`` at full, 1/2 and 1/4 resolution."""

    def __init__(self, width: int = 24, resolution: int = 32) -> None:
        super().__init__()
        self.config = {"model_type": "gouache-demo-depth", "width": width, "resolution": resolution}
        w = width
        self.enc1 = _block(3, w)
        self.enc2 = _block(w, 2 * w)
        self.enc3 = _block(2 * w, 3 * w)
        self.mid = _block(3 * w, 3 * w)
        self.dec2 = _block(3 * w + 2 * w, 2 * w)
        self.dec1 = _block(2 * w + w, w)
        self.head = nn.Conv2d(w, 1, 1)
        self.pool = nn.AvgPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)

    @property
    def resolution(self) -> int:
        return int(self.config["resolution"])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1], H and W multiples of 4 -> (B, H, W) depth in [0, 1]."""
        e1 = self.enc1(images * 2.0 - 1.0)
        e2 = self.enc2(self.pool(e1))
        e3 = self.enc3(self.pool(e2))
        m = self.mid(e3) + e3
        d2 = self.dec2(torch.cat([self.up(m), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up(d2), e1], dim=1))
        return torch.sigmoid(self.head(d1))[:, 0]

    def save_pretrained(self, folder: Path) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_NAME).write_text(json.dumps(self.config, indent=2, sort_keys=True) + "\n")
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_NAME))

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> DemoDepthNet:
        from safetensors.torch import load_file

        folder = Path(folder)
        config: dict[str, Any] = json.loads((folder / CONFIG_NAME).read_text())
        if config.get("model_type") != "gouache-demo-depth":
            raise ValueError(f"{folder} does not hold a gouache demo depth estimator")
        model = cls(width=int(config["width"]), resolution=int(config["resolution"]))
        model.load_state_dict(load_file(str(folder / WEIGHTS_NAME)))
        return model.eval()

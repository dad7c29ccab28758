"""A tiny image-classification checkpoint whose verdict a test chooses, saved like a real one."""

from __future__ import annotations

from pathlib import Path


def build_classifier(directory: Path, *, flag_everything: bool | None) -> Path:
    """A 2-label ViT ("normal", "nsfw"); its head's bias decides every verdict, or, with
    ``flag_everything=None``, a random head whose logits follow the image."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32, patch_size=8, num_channels=3, hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=32, num_labels=2,
        id2label={0: "normal", 1: "nsfw"}, label2id={"normal": 0, "nsfw": 1},
    )  # fmt: skip
    model = ViTForImageClassification(config)
    if flag_everything is None:
        with torch.no_grad():
            model.classifier.weight.normal_(0.0, 1.0)
    else:
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.copy_(torch.tensor([0.0, 8.0] if flag_everything else [8.0, 0.0]))
    model.save_pretrained(directory)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory

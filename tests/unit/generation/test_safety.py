from __future__ import annotations

import pytest
from PIL import Image

from gouache.generation.safety import SafetyClassifier
from tests.support.safety import build_classifier

IMAGES = [Image.new("RGB", (40, 30), (200, 10, 10)), Image.new("RGB", (64, 64), (0, 0, 0))]


@pytest.mark.parametrize("flag_everything", [True, False])
def test_verdicts_follow_the_checkpoint(tmp_path, flag_everything: bool) -> None:
    path = build_classifier(tmp_path / "clf", flag_everything=flag_everything)
    classifier = SafetyClassifier(str(path), flagged_labels=["NSFW"])
    assert classifier.flags(IMAGES) == [flag_everything] * 2
    assert classifier.flags([]) == []


def test_threshold_above_the_probability_lets_images_through(tmp_path) -> None:
    path = build_classifier(tmp_path / "clf", flag_everything=True)  # p(nsfw) = 0.99966
    assert SafetyClassifier(str(path), threshold=0.9999, flagged_labels=["nsfw"]).flags(IMAGES) == [False, False]


def test_a_classifier_without_any_flagged_label_is_a_configuration_error(tmp_path) -> None:
    path = build_classifier(tmp_path / "clf", flag_everything=True)
    with pytest.raises(ValueError, match="none of which is flagged"):
        SafetyClassifier(str(path), flagged_labels=["gore"]).warm_up()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_a_half_precision_classifier_gives_the_logits_of_float32(tmp_path, dtype: str) -> None:
    """``worker.helper_models = "half"`` on a GPU, run on the CPU with the dtype given directly:
    a random head (logits about 4 that follow the image) in half precision stays within 0.1 of
    float32 (bfloat16's step at 4 is 1/32) and reaches the same verdicts."""
    import numpy as np
    import torch

    half = getattr(torch, dtype)
    path = str(build_classifier(tmp_path / "clf", flag_everything=None))
    images = [*IMAGES, *(Image.effect_noise((32, 32), 60 + 40 * i).convert("RGB") for i in range(3))]
    full, low = SafetyClassifier(path), SafetyClassifier(path, dtype=half)
    assert {p.dtype for p in low.model.parameters()} == {half}
    expected, got = full.logits(images), low.logits(images)
    assert got.dtype == np.float32 and np.abs(got - expected).max() < 0.1
    assert np.ptp(expected[:, 1] - expected[:, 0]) > 0.2  # the logits do depend on the image
    assert low.flags(images) == full.flags(images)

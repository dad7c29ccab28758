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

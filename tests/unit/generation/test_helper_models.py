"""``worker.helper_models``: where the helper models (CLIP and image encoders, the safety
classifier, the depth estimators) run and in what precision, from the setting and the worker's
device, and the composition root (``worker/loading.py``) handing that to each helper.

The mapping is pure, so CUDA workers are checked here without a GPU; each helper's own test
file checks that it really loads in the dtype it is given and stays close to float32.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from pydantic import ValidationError

from gouache.config import Moderation, Settings, WorkerSettings, builtin_demo_spec
from gouache.generation.pretrained import helper_placement
from gouache.worker.loading import build_estimators, build_safety, build_scorer
from tests.support.safety import build_classifier

CPU, CUDA, CUDA1 = torch.device("cpu"), torch.device("cuda"), torch.device("cuda:1")


@pytest.mark.parametrize(
    ("mode", "worker_device", "expected"),
    [
        ("half", "cuda", (CUDA, torch.float16)),
        ("half", "cuda:1", (CUDA1, torch.float16)),
        ("half", CUDA1, (CUDA1, torch.float16)),
        ("half", "cpu", (CPU, torch.float32)),  # half precision is slow on a CPU
        ("full", "cuda:1", (CUDA1, torch.float32)),
        ("full", "cpu", (CPU, torch.float32)),
        ("cpu", "cuda", (CPU, torch.float32)),  # GPU memory left to the image models
        ("cpu", "cuda:1", (CPU, torch.float32)),
        ("cpu", "cpu", (CPU, torch.float32)),
    ],
)  # fmt: skip
def test_the_setting_and_the_worker_device_place_the_helpers(
    mode: str, worker_device: str | torch.device, expected: tuple[torch.device, torch.dtype]
) -> None:
    assert helper_placement(mode, worker_device) == expected


def test_auto_follows_cuda_availability(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert helper_placement("half", "auto") == (CUDA, torch.float16)
    assert helper_placement("cpu", "auto") == (CPU, torch.float32)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert helper_placement("half", "auto") == (CPU, torch.float32)


def test_the_setting_defaults_to_half_and_refuses_other_values() -> None:
    assert WorkerSettings().helper_models == "half"
    with pytest.raises(ValidationError):
        WorkerSettings(helper_models="fp8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="choose half, full or cpu"):
        helper_placement("fp8", "cpu")


def _settings(tmp_path: Path, mode: str, **extra: object) -> Settings:
    return Settings(
        data_dir=tmp_path,
        worker=WorkerSettings(helper_models=mode),  # type: ignore[arg-type]
        **extra,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("half", ("cuda:1", torch.float16)), ("full", ("cuda:1", torch.float32)), ("cpu", ("cpu", torch.float32))],
)
def test_loading_places_the_scorer_safety_and_estimators_of_a_cuda_worker(
    tmp_path: Path, mode: str, expected: tuple[str, torch.dtype]
) -> None:
    """Nothing loads here (no GPU needed): each helper is built with the placement it will use."""
    settings = _settings(tmp_path, mode, moderation=Moderation(classifier=str(tmp_path / "clf")))
    registry = SimpleNamespace(device=CUDA1)  # all build_scorer reads of the model registry
    assert build_scorer(settings, registry).placement == expected  # type: ignore[arg-type]
    safety = build_safety(settings, CUDA1)
    assert safety is not None
    assert (safety.device, safety.dtype) == expected
    estimators = build_estimators(settings, device="cuda:1")
    assert estimators.placement == (torch.device(expected[0]), expected[1])


def test_no_classifier_configured_means_no_safety(tmp_path: Path) -> None:
    assert build_safety(_settings(tmp_path, "half"), CPU) is None


@pytest.mark.parametrize("mode", ["half", "full", "cpu"])
def test_on_a_cpu_worker_every_mode_loads_the_helpers_on_the_cpu_in_float32(tmp_path: Path, mode: str) -> None:
    """The real loads: the safety classifier and the demo depth estimator, parameters checked."""
    settings = _settings(
        tmp_path, mode, models={"demo": builtin_demo_spec()}, default_model="demo",
        moderation=Moderation(classifier=str(build_classifier(tmp_path / "clf", flag_everything=None))),
    )  # fmt: skip
    safety = build_safety(settings, "cpu")
    assert safety is not None
    estimator = build_estimators(settings, device="cpu").get("demo")
    assert estimator is not None
    for model in (safety.model, estimator.inner.net):  # type: ignore[attr-defined]
        assert {(p.device, p.dtype) for p in model.parameters()} == {(CPU, torch.float32)}

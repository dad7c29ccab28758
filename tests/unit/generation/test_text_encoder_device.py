"""``text_encoder_device = "cpu"``: text encoders stay on the CPU, the embeddings go to the card.

This machine has no second real device, so the denoiser's device here is ``meta`` (tensors with
shapes and no data): a distinct device object, on which no value can be computed. With the
registry on ``meta`` and the text encoders on the CPU, every family's ``encode`` must compute on
the encoders' device (a tensor sent to ``model.device`` would either fail to mix with the CPU
ones or come back on ``meta`` and fail the value comparison) and its result must equal, value for
value, the same prompt encoded by an ordinary all-CPU registry; ``Family.prompt`` must then put
every tensor on the denoiser's device. What this does not prove: CUDA's own behaviour (copy
speed, CUDA kernels), which the CPU and ``meta`` stand in for.
"""

from __future__ import annotations

import pytest
import torch

from gouache.config import ModelSpec
from gouache.generation import models as models_module
from gouache.generation.loop.batch import BatchItem, LaneSpec
from gouache.generation.models import ModelRegistry

ITEMS = [BatchItem("a", "a red cat", "blurry", seed=1)]
META = torch.device("meta")


def _folder(family: str, tiny_transformers, tiny_model_dir, tiny_xl_model_dir):
    if family == "sd":
        return tiny_model_dir / "pipeline"
    if family == "sdxl":
        return tiny_xl_model_dir / "pipeline"
    return tiny_transformers(family)


def _tensors(cond) -> dict[str, torch.Tensor]:
    named = {f"positive.{k}": v for k, v in cond.positive.items()}
    named |= {f"negative.{k}": v for k, v in (cond.negative or {}).items()}
    named |= {f"shared.{k}": v for k, v in cond.shared.items()}
    return named


@pytest.mark.parametrize(("family", "guidance"), [
    ("sd", 7.0), ("sdxl", 7.0), ("flux-dev", 3.5), ("flux2-klein", 4.0), ("sd3", 4.5), ("z-image", 3.0),
])  # fmt: skip
def test_encoders_on_the_cpu_encode_as_on_the_denoisers_device(
    family, guidance, tiny_transformers, tiny_model_dir, tiny_xl_model_dir, tmp_path
):
    folder = str(_folder(family, tiny_transformers, tiny_model_dir, tiny_xl_model_dir))
    split = ModelRegistry({"m": ModelSpec(path=folder, text_encoder_device="cpu")},
                          cache_dir=tmp_path, device="meta").get("m")  # fmt: skip
    same = ModelRegistry({"m": ModelSpec(path=folder)}, cache_dir=tmp_path, device="cpu").get("m")
    assert split.text_device.type == "cpu" and split.device == META
    assert all(p.device.type == "cpu" for e in split.text_encoders for p in e.parameters())
    assert all(p.device == META for p in split.denoiser.parameters())
    assert all(p.device == META for p in split.vae.parameters())

    spec = LaneSpec(2, "flow-euler" if split.family.sampler_kind == "flow" else "euler", guidance)
    cfg = split.family.uses_cfg(split, spec)
    with torch.inference_mode():
        on_cpu = split.family.encode(split, ITEMS, spec, cfg, 32, 32)
        moved = split.family.prompt(split, ITEMS, spec, cfg, 32, 32)
        reference = same.family.encode(same, ITEMS, spec, cfg, 32, 32)
    got, want = _tensors(on_cpu), _tensors(reference)
    assert got.keys() == want.keys() and got
    for name, tensor in got.items():
        assert tensor.device.type == "cpu", name
        torch.testing.assert_close(tensor, want[name], rtol=0, atol=0, msg=name)
    assert all(t.device == META for t in _tensors(moved).values())


def test_encoders_on_the_cpu_are_outside_the_cards_budget(tiny_transformers, tmp_path):
    """The budget counts what is on the device: two models whose encoders stay on the CPU fit
    a budget of their device parts exactly (with the encoders counted, one would leave).
    Evicted models are dropped: a ``meta`` module has no data to move to the CPU."""
    folder = str(tiny_transformers("z-image"))
    specs = {n: ModelSpec(path=folder, text_encoder_device="cpu") for n in ("a", "c")}
    specs["b"] = ModelSpec(path=folder)
    probe = ModelRegistry(specs, cache_dir=tmp_path, device="meta")
    a, b = probe.get("a"), probe.get("b")
    encoders = sum(t.numel() * t.element_size() for e in a.text_encoders
                   for t in (*e.parameters(), *e.buffers()))  # fmt: skip
    assert encoders > 0
    assert models_module._weight_bytes(a) == models_module._weight_bytes(b) - encoders
    registry = ModelRegistry(specs, cache_dir=tmp_path, device="meta",
                             memory_budget_bytes=2 * models_module._weight_bytes(a), evict="drop")  # fmt: skip
    registry.get("a")
    registry.get("c")
    assert registry.resident == ("a", "c")
    registry.get("b")  # its encoders count: both others must leave
    assert registry.resident == ("b",)

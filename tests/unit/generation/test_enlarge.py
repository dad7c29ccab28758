"""Enlarging diversity: prompt variants, the diverse-subset selection, limited-interval guidance
and the paired baseline -> enlarged runs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from gouache.generation.diversity.enlarge import (
    INTERVAL,
    OVERSAMPLE,
    generate_enlarged,
    known_by,
    prompt_variants,
    select_diverse,
)
from gouache.generation.diversity.metrics import vendi
from gouache.generation.loop.batch import BatchItem, BatchKey, ItemResult
from gouache.generation.loop.conditioning import guidance_scale

DEMO = "a large red circle in the center on a plain blue background"


def test_variants_keep_the_subject_and_vary_the_rest() -> None:
    variants = prompt_variants(DEMO, 8, seed=3)
    assert variants[0] == DEMO and len(set(variants)) == 8
    assert all("red circle" in v and v.endswith(("background",)) or "red circle" in v for v in variants)
    assert all("red circle" in v and "blue background" in v for v in variants)
    assert any("at the left" in v or "at the right" in v or "at the top" in v for v in variants)
    assert prompt_variants(DEMO, 8, seed=3) == variants  # deterministic
    assert prompt_variants(DEMO, 8, seed=4) != variants


def test_variants_use_only_words_the_model_knows() -> None:
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained("gouache/models/demo/pipeline/tokenizer")
    known = known_by(tokenizer)
    assert known("at the top") and known("striped") and not known("huge") and not known("at dawn")
    for variant in prompt_variants(DEMO, 12, seed=1, known=known):
        assert all(known(word) for word in variant.replace(",", " ").split()), variant


def test_select_diverse_prefers_the_spread_out_subset() -> None:
    # Items 0-3 are one cluster, 4 and 5 each their own: the best 3 take one of each.
    labels = np.array([0, 0, 0, 0, 1, 2])
    kernel = (labels[:, None] == labels[None, :]).astype(float)
    chosen = select_diverse(kernel, 3, allowed=range(6), first=0)
    assert sorted(labels[chosen]) == [0, 1, 2]
    assert vendi(kernel[np.ix_(chosen, chosen)]) == pytest.approx(3.0)
    assert 4 not in select_diverse(kernel, 3, allowed=[0, 1, 2, 3, 5], first=0)  # gated out


def test_guidance_scales_follow_each_items_interval() -> None:
    plain = BatchItem("a", "x")
    limited = BatchItem("b", "x", guidance_interval=(0.0, 0.7))
    scales = [guidance_scale(5.0, item.guidance_interval, 0.9) for item in (plain, limited, limited)]
    assert scales == [5.0, 1.0, 1.0]
    assert guidance_scale(5.0, limited.guidance_interval, 0.7) == 5.0  # (lo, hi]: hi included
    assert guidance_scale(5.0, limited.guidance_interval, 0.0) == 1.0  # lo excluded
    with pytest.raises(ValueError, match="guidance_interval"):
        BatchItem("c", "x", guidance_interval=(0.8, 0.2))


def _key(guidance: float = 5.0) -> BatchKey:
    return BatchKey("builtin:tiny", "txt2img", 64, 64, 4, "ddim", guidance)


def test_engine_honours_the_guidance_interval_per_item(registry, float_engine_cls) -> None:
    engine = float_engine_cls(registry)
    everywhere = BatchItem("a", "a red cat", seed=3, guidance_interval=(0.0, 1.0))
    nowhere = BatchItem("b", "a red cat", seed=3, guidance_interval=(0.999, 1.0))
    plain = BatchItem("c", "a red cat", seed=3)
    got = {r.item_id: np.stack(r.images) for r in engine.generate(_key(), [everywhere, nowhere, plain])}
    (unguided,) = engine.generate(_key(1.0), [BatchItem("d", "a red cat", seed=3)])
    assert np.abs(got["a"] - got["c"]).max() < 1e-5  # the whole interval: ordinary CFG
    assert np.abs(got["b"] - np.stack(unguided.images)).max() < 1e-4  # never: no guidance
    assert np.abs(got["a"] - got["b"]).max() > 1e-3


def _fake_generate(calls: list):
    def generate(key: BatchKey, items) -> list[ItemResult]:
        calls.append((key, list(items)))
        out = []
        for item in items:
            rng = np.random.default_rng(item.seed + (1000 if key.diversify else 0) + len(item.prompt))
            images = [Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)) for _ in range(item.count)]
            out.append(ItemResult(item.item_id, images=images))
        return out

    return generate


@pytest.mark.parametrize("method", ["cads", "interval", "variants"])
def test_baseline_and_enlarged_share_seeds(method: str) -> None:
    calls: list = []
    item = BatchItem("j", DEMO, seed=40, count=4)
    (run,) = generate_enlarged(_fake_generate(calls), _key(), [item], method).values()
    base_key, base_items = calls[0]
    assert not base_key.diversify and base_items == [item]
    assert len(run.baseline.images) == len(run.enlarged.images) == 4
    if method == "cads":
        assert calls[1][0].diversify and calls[1][1] == [item]
        assert run.seeds == (40, 41, 42, 43)
    elif method == "interval":
        assert calls[1][1][0].guidance_interval == INTERVAL and calls[1][1][0].seed == 40
    else:
        candidates = calls[1][1]
        assert len(candidates) == 4 * OVERSAMPLE and [c.seed for c in candidates[:4]] == [40, 41, 42, 43]
        assert candidates[0].prompt == DEMO and all(c.count == 1 for c in candidates)
        assert set(run.seeds) <= {c.seed for c in candidates} and len(set(run.seeds)) == 4
        assert all(p in {c.prompt for c in candidates} for p in run.prompts)


def test_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown enlargement"):
        generate_enlarged(_fake_generate([]), _key(), [BatchItem("j", "x")], "magic")

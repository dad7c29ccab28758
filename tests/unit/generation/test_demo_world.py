"""The demo world: deterministic scenes, exact depth maps, canonical captions, held-out split."""

from __future__ import annotations

import numpy as np
import pytest

from tools.demo.world import (
    BACKGROUNDS,
    COLOURS,
    HELDOUT_PAIRS,
    SHAPES,
    Scene,
    Shape,
    caption,
    depth_to_image,
    heldout_scenes,
    render,
    sample_scene,
    vocabulary,
)


def _one(kind: str = "circle", colour: str = "red", background: str = "plain", style: str = "flat",
         size: str = "large", bg: str = "blue") -> Scene:
    return Scene((Shape(kind, colour, size, style, 0.5, 0.5),), background, bg, "center", 1)


def test_same_seed_same_scene_and_pixels() -> None:
    a, b = render(sample_scene(123)), render(sample_scene(123))
    assert a.caption == b.caption
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.depth, b.depth)
    assert render(sample_scene(124)).caption != a.caption or not np.array_equal(
        render(sample_scene(124)).image, a.image)


def test_outputs_have_the_documented_shapes_and_ranges() -> None:
    r = render(sample_scene(5), size=48)
    assert r.image.shape == (48, 48, 3) and r.image.dtype == np.uint8
    assert r.depth.shape == (48, 48) and r.depth.dtype == np.float32
    assert r.depth.min() >= 0.0 and r.depth.max() <= 1.0
    assert r.mask.shape == (48, 48)


def test_caption_reads_as_documented() -> None:
    scene = Scene(
        (Shape("star", "red", "small", "flat", 0.3, 0.5), Shape("circle", "blue", "large", "flat", 0.7, 0.5)),
        "striped", "yellow", "left of", 0,
    )
    assert caption(scene) == "a small red star left of a large blue circle on a striped yellow background"
    one = Scene((Shape("ring", "green", "large", "outlined", 0.5, 0.3),), "dotted", "white", "top", 0)
    assert caption(one) == "a large outlined green ring at the top on a dotted white background"


def test_every_caption_word_is_in_the_vocabulary() -> None:
    vocab = set(vocabulary())
    for seed in range(300):
        assert set(render(sample_scene(seed), 16).caption.split()) <= vocab


def test_red_circle_on_blue_is_red_where_the_mask_says_and_blue_elsewhere() -> None:
    r = render(_one())
    inside, outside = r.image[r.mask == 0], r.image[r.mask == -1]
    assert np.abs(inside.mean(0) - COLOURS["red"]).max() < 10
    assert np.abs(outside.mean(0) - COLOURS["blue"]).max() < 10


def test_depth_map_is_exact_and_shapes_are_nearer_than_background() -> None:
    r = render(_one())
    assert np.all(r.depth[r.mask == 0] == pytest.approx(0.6))
    assert r.depth[r.mask == -1].max() < 0.6
    two = render(sample_scene(3, n_shapes=2))
    assert {round(float(d), 3) for d in np.unique(two.depth[two.mask >= 0])} <= {0.6, 0.75}


def test_later_shapes_occlude_and_are_nearer() -> None:
    scene = Scene(
        (Shape("square", "red", "large", "flat", 0.45, 0.5), Shape("circle", "green", "large", "flat", 0.55, 0.5)),
        "plain", "black", "left of", 0,
    )
    r = render(scene)
    overlap_centre = r.mask[16, 16]
    assert overlap_centre == 1
    assert r.depth[16, 16] > r.depth[16, 2]


@pytest.mark.parametrize("background", BACKGROUNDS)
def test_background_styles_differ_in_texture(background: str) -> None:
    image = render(_one(background=background, size="small")).image.astype(float)
    corner = image[:8, :8]
    spread = corner.std(axis=(0, 1)).max()
    if background == "plain":
        assert spread < 1
    else:
        assert spread > 3


@pytest.mark.parametrize("kind", SHAPES)
def test_shapes_have_distinct_silhouettes(kind: str) -> None:
    masks = {k: render(_one(kind=k), 64).mask >= 0 for k in SHAPES}
    for other in SHAPES:
        if other != kind:
            assert (masks[kind] != masks[other]).mean() > 0.03


def test_training_scenes_never_contain_heldout_pairs() -> None:
    for seed in range(2000):
        for s in sample_scene(seed, "train").shapes:
            assert (s.colour, s.kind) not in HELDOUT_PAIRS
        assert all(s.colour != sample_scene(seed).bg_colour for s in sample_scene(seed).shapes)


def test_heldout_split_covers_every_pair_and_every_background() -> None:
    scenes = heldout_scenes(count_per_pair=5)
    assert {(s.shapes[0].colour, s.shapes[0].kind) for s in scenes} == set(HELDOUT_PAIRS)
    assert {s.background for s in scenes} == set(BACKGROUNDS)
    assert [caption(s) for s in scenes] == [caption(s) for s in heldout_scenes(count_per_pair=5)]
    assert all((s.shapes[0].colour, s.shapes[0].kind) in HELDOUT_PAIRS
               for s in (sample_scene(i, "heldout") for i in range(50)))


def test_heldout_pairs_leave_every_colour_and_shape_in_training() -> None:
    assert {c for c, _ in HELDOUT_PAIRS} == set(COLOURS)
    for kind in SHAPES:
        assert sum((c, kind) not in HELDOUT_PAIRS for c in COLOURS) >= 5


def test_depth_to_image_is_three_channel_white_near() -> None:
    r = render(_one())
    img = np.asarray(depth_to_image(r.depth))
    assert img.shape == (32, 32, 3)
    assert img[16, 16, 0] > img[0, 0, 0]


# The pieces built on the world: its one-token-per-word tokenizer, the identity autoencoder
# that makes the demo model pixel-space, and the benchmark's metrics.


def test_every_world_word_is_one_token_and_survives_save_and_load(tmp_path) -> None:  # noqa: ANN001
    from transformers import CLIPTokenizer

    from tools.demo.components import build_tokenizer

    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    loaded = CLIPTokenizer.from_pretrained(tmp_path)
    text = render(sample_scene(9)).caption
    ids = loaded(text).input_ids
    assert ids == tokenizer(text).input_ids
    assert len(ids) == len(text.split()) + 2
    assert len(loaded("an unknown word").input_ids) > 4  # falls back to characters


def test_identity_vae_round_trips_pixels() -> None:
    import torch

    from tools.demo.components import build_identity_vae

    vae = build_identity_vae()
    x = torch.from_numpy(render(sample_scene(4)).image).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode()
        y = vae.decode(z).sample
    assert z.shape == x.shape
    assert (y - x).abs().max() < 1e-3


def test_vendi_is_one_for_copies_and_n_for_orthogonal_features() -> None:
    from tools.demo.metrics import frechet_distance, vendi

    assert vendi(np.ones((8, 4))) == pytest.approx(1.0)
    assert vendi(np.eye(8)) == pytest.approx(8.0)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + 3.0) == pytest.approx(36.0, rel=1e-3)


def test_checkpoint_and_resume_round_trip(tmp_path) -> None:
    import torch

    from tools.demo.training import checkpoint, resume

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    checkpoint(tmp_path / "x.pt", {"model": model, "opt": opt}, step=42)
    fresh = torch.nn.Linear(3, 2)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    assert resume(tmp_path / "missing.pt", "x", {"model": fresh, "opt": fresh_opt}) == 0
    assert resume(tmp_path / "x.pt", "x", {"model": fresh, "opt": fresh_opt}) == 42
    assert torch.equal(fresh.weight, model.weight)
    assert fresh_opt.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]

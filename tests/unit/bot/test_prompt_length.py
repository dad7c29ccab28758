"""The bot's prompt-length check: the model's own tokenizer, its real limit, the user's own words.

Run against the shipped demo model's tokenizer (it reads 32 tokens, not Stable Diffusion's 77).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from gouache import messages
from gouache.bot import prompt_length
from gouache.bot.commands import build_request, parse_text
from gouache.bot.prompt_length import Overflow, demo_pipeline, prompt_length_checker
from gouache.config import ModelSpec, Settings
from gouache.errors import InvalidRequest, NotFound
from gouache.request import Origin

DEMO = "builtin:demo"
CJK_EMOJI = "夕焼けの海に浮かぶ赤い灯台と青い空、白い雲が流れていく🌅🗼☁️✨ and a boat"
TWENTY_SEVEN_WORDS = (
    "a red circle and a blue square next to a green triangle above a yellow "
    "star below a purple circle on the left of an orange square"
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


def pipeline_copy(tmp_path: Path, **index: object) -> Path:
    """The demo pipeline's tokenizer and model_index.json, with ``index`` entries changed."""
    folder = tmp_path / "model"
    shutil.copytree(demo_pipeline() / "tokenizer", folder / "tokenizer")
    data = json.loads((demo_pipeline() / "model_index.json").read_text())
    data.update(index)
    (folder / "model_index.json").write_text(json.dumps(data))
    return folder


def test_a_prompt_that_fits_passes(settings: Settings) -> None:
    assert prompt_length_checker(settings)(DEMO, "a red circle on a blue background") is None


def test_cjk_and_emoji_show_the_users_own_characters_and_the_real_limit(settings: Settings) -> None:
    found = prompt_length_checker(settings)(DEMO, CJK_EMOJI)
    assert found is not None and found.limit == 32
    assert found.cut.startswith("…") and CJK_EMOJI.endswith(found.cut.removeprefix("…"))
    assert "🌅🗼☁️✨ and a boat" in found.cut and "endoftext" not in found.cut
    text = messages.prompt_too_long(found.cut, found.limit)
    assert "(32 tokens)" in text and "77" not in text and "<|" not in text


def test_a_27_word_english_prompt_shows_the_words_that_would_be_lost(settings: Settings) -> None:
    assert len(TWENTY_SEVEN_WORDS.split()) == 27
    found = prompt_length_checker(settings)(DEMO, TWENTY_SEVEN_WORDS)
    assert found == Overflow(32, "orange square")


def test_the_cut_is_where_the_tokenizer_stops(settings: Settings) -> None:
    """Kept: the start marker and 30 tokens ("red" is one), then the end marker."""
    check = prompt_length_checker(settings)
    assert check(DEMO, " ".join(["red"] * 30)) is None
    assert check(DEMO, " ".join(["red"] * 30) + " blue square") == Overflow(32, "blue square")


def test_build_request_refuses_with_the_real_limit(settings: Settings) -> None:
    origin = Origin(platform="web", request_id="r", user="u")
    with pytest.raises(InvalidRequest) as info:
        build_request(parse_text(f"{TWENTY_SEVEN_WORDS} --model {DEMO}"), origin, settings,
                      prompt_overflow=prompt_length_checker(settings))  # fmt: skip
    assert info.value.message == messages.prompt_too_long("orange square", 32)
    with pytest.raises(InvalidRequest, match="negative prompt is longer than this model reads"):
        build_request(parse_text(f"a fox --model {DEMO} --no {TWENTY_SEVEN_WORDS}"), origin,
                      settings, prompt_overflow=prompt_length_checker(settings))  # fmt: skip


def test_two_tokenizers_report_the_longer_cut(tmp_path: Path) -> None:
    """SDXL names ``tokenizer_2``: the prompt must fit both (here one reads 16 tokens)."""
    folder = pipeline_copy(tmp_path, tokenizer_2=["transformers", "CLIPTokenizer"])
    shutil.copytree(folder / "tokenizer", folder / "tokenizer_2")
    config = folder / "tokenizer_2" / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "model_max_length": 16}))
    settings = Settings(data_dir=tmp_path / "data", models={"xl": ModelSpec(path=str(folder))})
    found = prompt_length_checker(settings)("xl", " ".join(["red"] * 20) + " blue")
    assert found == Overflow(16, " ".join(["red"] * 6) + " blue")


def test_builtin_tiny_is_checked_once_the_worker_has_built_it(settings: Settings) -> None:
    check = prompt_length_checker(settings)
    long = " ".join(["red"] * 40)
    assert check("builtin:tiny", long) is None  # not built yet: unchecked, not refused
    built = settings.data_dir / "models" / "builtin-tiny" / "pipeline"
    shutil.copytree(demo_pipeline() / "tokenizer", built / "tokenizer")
    shutil.copy(demo_pipeline() / "model_index.json", built / "model_index.json")
    found = check("builtin:tiny", long)
    assert found is not None and found.limit == 32


def test_a_missing_demo_is_a_clear_error(settings: Settings, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(prompt_length, "demo_pipeline", lambda: tmp_path / "gone")
    with pytest.raises(NotFound, match="builtin:demo is not installed"):
        prompt_length_checker(settings)(DEMO, "a cat")


@pytest.mark.parametrize(
    "broken",
    [
        {"tokenizer": ["os", "system"]},  # a file never chooses a module to import
        {"tokenizer": ["transformers", "NoSuchTokenizer"]},
    ],
)
def test_a_tokenizer_that_cannot_load_leaves_prompts_unchecked(
    broken: dict[str, object], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = pipeline_copy(tmp_path, **broken)
    settings = Settings(data_dir=tmp_path / "data", models={"odd": ModelSpec(path=str(folder))})
    check = prompt_length_checker(settings)
    with caplog.at_level(logging.WARNING, logger="gouache.bot.prompt_length"):
        assert check("odd", " ".join(["red"] * 40)) is None
        assert check("odd", " ".join(["red"] * 40)) is None
    assert [r.getMessage() for r in caplog.records] == [
        "cannot load the tokenizer of odd; prompt lengths go unchecked"
    ]


def test_a_hub_id_is_read_from_the_cache_only_when_offline(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    settings = Settings(data_dir=tmp_path / "data", offline=True,
                        models={"hub": ModelSpec(path="someone/not-downloaded")})  # fmt: skip
    assert prompt_length_checker(settings)("hub", " ".join(["red"] * 100)) is None

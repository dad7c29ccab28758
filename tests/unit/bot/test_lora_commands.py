"""--lora, --style and --no-trigger at admission: resolution, every refusal, round trips, and the
catalog's torch-free family detection (headers written with numpy, no torch imported)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from gouache import messages
from gouache.bot.commands import build_request, format_command, from_options, parse_text
from gouache.bot.loras import listing, lora_names
from gouache.config import Settings
from gouache.errors import InvalidRequest
from gouache.generation.loras.catalog import LoraCatalog, read_family
from gouache.request import Kind, Origin, Request

ORIGIN = Origin("cli", "r1", "u1")
_K = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight"


def _file(path: Path, width: int, **extra: np.ndarray) -> Path:
    save_file({_K: np.zeros((4, width), np.float32), **extra}, str(path))
    return path


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    folder = tmp_path / "loras"
    folder.mkdir()
    _file(folder / "detail.safetensors", 768)
    _file(folder / "xlstyle.safetensors", 2048)
    (folder / "corrupt.safetensors").write_bytes(b"not a safetensors file")
    return Settings(
        data_dir=tmp_path, loras_dir=folder,
        loras={"inky": {"path": str(_file(tmp_path / "inky.safetensors", 768)),
                        "trigger": ["inkwash"], "default_scale": 0.8}},
        styles={"poster": {"prompt": "{prompt}, flat poster art", "negative": "photo",
                           "loras": ["detail:0.5"], "steps": 12, "cfg": 3.5}},
    )  # fmt: skip


def _build(settings: Settings, text: str) -> Request:
    return build_request(parse_text(text), ORIGIN, settings)


def test_families_are_read_from_headers_without_torch(tmp_path: Path) -> None:
    sd, xl = _file(tmp_path / "sd.safetensors", 768), _file(tmp_path / "xl.safetensors", 2048)
    te2 = tmp_path / "te2.safetensors"
    save_file({"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": np.zeros((4, 8), np.float32)}, str(te2))
    code = (f"import sys; from pathlib import Path; from gouache.generation.loras.catalog import read_family;"
            f"print(*(read_family(Path(p)) for p in {[str(sd), str(xl), str(te2)]!r}));"
            "sys.exit(1 if 'torch' in sys.modules else 0)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["sd", "sdxl", "sdxl"]
    with pytest.raises(OSError):
        read_family(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError):
        read_family(tmp_path / "junk.safetensors")


def test_the_catalog_scans_the_folder_and_configured_entries_win(settings: Settings) -> None:
    catalog = LoraCatalog.from_settings(settings)
    assert catalog.names == ("corrupt", "detail", "inky", "xlstyle")
    assert catalog.get("corrupt").broken  # type: ignore[union-attr]
    assert catalog.get("inky").trigger == ("inkwash",)  # type: ignore[union-attr]
    assert lora_names(settings, "builtin:demo") == ["detail", "inky"]  # sd only, usable only


def test_loras_scales_triggers_and_defaults(settings: Settings) -> None:
    request = _build(settings, "a fox --lora detail:0.7 --lora inky")
    assert request.loras == (("detail", 0.7), ("inky", 0.8))
    assert request.prompt == "a fox" and request.text == "a fox, inkwash"
    quiet = _build(settings, "a fox --lora inky --no-trigger")
    assert quiet.text == "a fox" and quiet.model_prompt == ""


def test_a_style_wraps_the_prompt_and_brings_its_loras_and_defaults(settings: Settings) -> None:
    request = _build(settings, "a fox --no blurry --style poster --lora detail:0.9")
    assert request.text == "a fox, flat poster art"
    assert request.negative_text == "blurry, photo"
    assert request.loras == (("detail", 0.9),)  # --lora wins over the style's scale
    assert (request.steps, request.guidance) == (12, 3.5)
    assert _build(settings, "a fox --style poster --steps 5").steps == 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("fox --lora detial", messages.lora_unknown("detial", ["detail"])),
        ("fox --lora xlstyle", messages.lora_wrong_family("xlstyle", "sdxl", "builtin:demo", "sd")),
        ("fox --lora detail:2.5", messages.lora_scale_range("detail", 2.5, 2.0)),
        ("fox --lora detail:-3", messages.lora_scale_range("detail", -3.0, 2.0)),
        ("fox --lora corrupt", None),
        ("fox --lora detail --lora detail:0.3", messages.lora_twice("detail")),
        ("fox --lora detail:x", None),
        ("fox --style nope", messages.unknown_style("nope", ["poster"])),
        ("/interpolate a | b --lora detail", None),
    ],
)  # fmt: skip
def test_bad_loras_are_refused_at_admission(settings: Settings, text: str, message: str | None) -> None:
    with pytest.raises(InvalidRequest) as info:
        _build(settings, text)
    if message is not None:
        assert info.value.message == message
    if "corrupt" in text:
        assert "unreadable" in info.value.message


def test_too_many_loras(settings: Settings) -> None:
    limited = settings.model_copy(update={"limits": settings.limits.model_copy(update={"max_loras": 1})})
    with pytest.raises(InvalidRequest, match="At most 1 LoRA"):
        _build(limited, "fox --lora detail --lora inky")


def test_a_request_round_trips_through_text_json_and_options(settings: Settings) -> None:
    request = _build(settings, "a fox --style poster --lora inky:-0.5 --no-trigger --seed 3")
    again = build_request(parse_text(format_command(request)), ORIGIN, settings)
    assert again == request
    assert Request.from_json(request.to_json()) == request
    typed = build_request(from_options(Kind.IMAGINE, {"prompt": "a fox", "style": "poster", "loras": "inky:-0.5",
                                                      "no_trigger": True, "seed": 3}), ORIGIN, settings)  # fmt: skip
    assert typed == request


def test_png_parameters_name_loras_in_a1111_form(settings: Settings) -> None:
    from gouache.worker.jobs import image_parameters

    text = image_parameters(_build(settings, "a fox --style poster --lora inky:0.6 --seed 3"), 0)
    first, negative, rest = text.split("\n")
    assert first == "a fox, flat poster art, inkwash <lora:detail:0.5> <lora:inky:0.6>"
    assert negative == "Negative prompt: photo"
    assert rest.endswith(", Style: poster")


def test_the_listing_names_loras_and_styles(settings: Settings) -> None:
    text = listing(settings, "builtin:demo")
    assert "`inky` (default 0.8) - trigger: inkwash" in text and "`poster`" in text
    assert "xlstyle" not in text and "corrupt" not in text

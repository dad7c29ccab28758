"""The command line people type: flags inside or outside the quotes, unquoted prompts, help."""

from __future__ import annotations

from pathlib import Path

import pytest

from gouache import cli


@pytest.mark.parametrize(
    "argv",
    [["a red circle --seed 3"], ["a red circle", "--seed", "3"], ["a", "red", "circle", "--seed", "3"],
     ["-o", "pics", "a", "red", "circle", "--seed=3"]],
)  # fmt: skip
def test_every_way_of_typing_it_gives_one_prompt(argv: list[str]) -> None:
    options, prompt = cli.split_prompt(argv)
    assert " ".join(prompt.split()).replace("--seed=3", "--seed 3") == "a red circle --seed 3"
    assert options in ([], ["-o", "pics"])


def test_local_options_are_taken_out_wherever_they_are() -> None:
    options, prompt = cli.split_prompt(
        ["/depth", "a", "stone", "arch", "--file", "map.png", "--n", "2", "--out=o", "--gif"])
    assert options == ["--file", "map.png", "--out=o"]
    assert prompt == "/depth a stone arch --n 2 --gif"


def test_generate_passes_the_whole_prompt_and_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen = {}

    def fake(settings, text, out, *, upload=None):  # noqa: ANN001, ANN202
        seen.update(text=text, out=out, upload=upload)
        return []

    monkeypatch.setattr("gouache.generate.generate_to_dir", fake)
    code = cli.main(["generate", "a", "red", "circle", "--seed", "3", "-o", str(tmp_path),
                     "--data-dir", str(tmp_path)])  # fmt: skip
    assert code == 0 and seen == {"text": "a red circle --seed 3", "out": tmp_path, "upload": None}


def test_help_lists_prompt_flags_the_output_folder_and_no_queue_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for command in ("generate", "diversity"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        text = capsys.readouterr().out
        for needed in ("--seed 7", "--gif", "--sweep", "/interpolate", "output folder", "image-0.png"):
            assert needed in text, (command, needed)
        assert "--database-url" not in text and "--depth" not in text
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    assert "--database-url" in capsys.readouterr().out


def test_no_prompt_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["generate", "-o", str(tmp_path), "--data-dir", str(tmp_path)]) == 2
    assert "give a prompt" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "with_file", "kind", "prompt"),
    [("/depth a hill --steps 4", True, "depth", "a hill"),  # gouache generate "/depth a hill" --file x.png
     ("a hill --steps 4", True, "depth", "a hill"),  # a file and a bare prompt: a /depth
     ("/depth a hill --steps 4", False, "depth", "a hill"),
     ("a hill --steps 4", False, "imagine", "a hill"),
     ("/diversity a hill --steps 4", False, "diversity", "a hill")],
)  # fmt: skip
def test_generate_reads_the_command_as_chat_does(text: str, with_file: bool, kind: str, prompt: str) -> None:
    from gouache.generate import command_for

    command = command_for(text, with_file=with_file)
    assert (command.kind.value, command.prompt, command.options) == (kind, prompt, {"steps": 4})


def test_generate_refuses_a_file_for_a_command_without_one() -> None:
    from gouache.errors import InvalidRequest
    from gouache.generate import command_for

    with pytest.raises(InvalidRequest, match="^--file only works with /depth.$"):
        command_for("/imagine a hill", with_file=True)


@pytest.mark.parametrize("text", ["a hill --n 8", "/diversity a hill --n 8", "/DIVERSITY a hill --n 8"])
def test_diversity_takes_the_prompt_with_or_without_its_command(text: str) -> None:
    from gouache.diversity_cli import diversity_command

    command = diversity_command(text)
    assert (command.kind.value, command.prompt, command.options) == ("diversity", "a hill", {"count": 8})


def test_diversity_keeps_another_command_word_as_prompt_text() -> None:
    from gouache.diversity_cli import diversity_command

    assert diversity_command("/depth a hill").prompt == "/depth a hill"

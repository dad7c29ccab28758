"""`gouache run --no-worker`: the scale-out shape, where `gouache worker`s run elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from gouache.cli import main


@pytest.mark.parametrize(("flags", "spawn"), [([], True), (["--no-worker"], False)])
def test_run_passes_the_worker_switch_to_the_service(
    flags: list[str], spawn: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, bool] = {}

    async def run_service(settings: object, *, spawn_worker: bool = True) -> int:
        seen["spawn_worker"] = spawn_worker
        return 0

    monkeypatch.setattr("gouache.service.run_service", run_service)
    assert main(["run", *flags, "--data-dir", str(tmp_path)]) == 0
    assert seen == {"spawn_worker": spawn}

"""gouache.startup: the container's start-up logic as plain functions (token, paths, device, health)."""

from __future__ import annotations

import io
import json
import logging
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gouache.config import Settings
from gouache.startup import (
    TOKEN_FILE,
    StartupError,
    cuda_report,
    ensure_data_dir,
    healthcheck,
    healthcheck_url,
    in_container,
    prepare_environment,
    prepare_run,
    prepare_worker,
    resolve_web_token,
)


def _container_settings(tmp_path: Path, **kw: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", host="0.0.0.0", port=8080, **kw)


# --- the web token ---------------------------------------------------------------------------
def test_off_loopback_without_a_token_generates_one_prints_it_once_and_stores_it(tmp_path: Path) -> None:
    settings = _container_settings(tmp_path)
    out = io.StringIO()
    first = prepare_run(settings, environ={}, out=out)
    assert first.web.token is not None
    token = first.web.token.get_secret_value()
    assert len(token) >= 40
    assert out.getvalue().count(token) == 2  # the token line and the ?token= link, one banner
    assert f"http://localhost:8080/?token={token}" in out.getvalue()
    stored = settings.data_dir / TOKEN_FILE
    assert stored.read_text().strip() == token
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert token in first.secret_values()  # so the log filter masks it from here on
    assert settings.web.token is None  # the caller's settings are not mutated

    again = io.StringIO()
    second = prepare_run(settings, environ={}, out=again)
    assert second.web.token is not None and second.web.token.get_secret_value() == token
    assert again.getvalue() == ""  # printed once, on the first start only


def test_a_configured_token_wins_and_nothing_is_written(tmp_path: Path) -> None:
    from pydantic import SecretStr

    settings = _container_settings(tmp_path, web={"token": SecretStr("from-the-secret-file")})
    out = io.StringIO()
    ready = prepare_run(settings, environ={}, out=out)
    assert ready.web.token is not None and ready.web.token.get_secret_value() == "from-the-secret-file"
    assert out.getvalue() == ""
    assert not (settings.data_dir / TOKEN_FILE).exists()


def test_token_file_variable_and_an_empty_secret_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "web_token"
    secret.write_text("s3cret-from-compose\n")
    monkeypatch.setenv("GOUACHE_WEB__TOKEN_FILE", str(secret))
    monkeypatch.setenv("GOUACHE_HOST", "0.0.0.0")
    monkeypatch.setenv("GOUACHE_DATA_DIR", str(tmp_path / "data"))
    token = resolve_web_token(Settings.load())
    assert token is not None and (token.value, token.source) == ("s3cret-from-compose", "configured")

    secret.write_text("\n")  # a compose secret left empty: generate one instead
    token = resolve_web_token(Settings.load())
    assert token is not None and token.source == "generated"
    assert (tmp_path / "data" / TOKEN_FILE).read_text().strip() == token.value


def test_loopback_needs_no_token(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    out = io.StringIO()
    assert prepare_run(settings, environ={}, out=out).web.token is None
    assert out.getvalue() == ""
    assert not (settings.data_dir / TOKEN_FILE).exists()


def test_an_empty_stored_token_is_replaced(tmp_path: Path) -> None:
    settings = _container_settings(tmp_path)
    settings.data_dir.mkdir(parents=True)
    (settings.data_dir / TOKEN_FILE).write_text("")
    token = resolve_web_token(settings)
    assert token is not None and token.source == "generated" and token.value
    assert (settings.data_dir / TOKEN_FILE).read_text().strip() == token.value


def test_a_data_dir_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    # Works as root too: a file where the data volume should be.
    (tmp_path / "data").write_text("not a folder")
    with pytest.raises(StartupError, match=r"cannot write to .*data.*GOUACHE_DATA_DIR"):
        prepare_run(_container_settings(tmp_path), environ={}, out=io.StringIO())


# --- data paths ------------------------------------------------------------------------------
def test_in_a_container_the_model_cache_goes_on_the_data_volume(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    environ: dict[str, str] = {}
    changed = prepare_environment(settings, environ, container=True)
    assert environ["HF_HOME"] == str((tmp_path / "data" / "huggingface").absolute())
    assert environ["HF_HUB_OFFLINE"] == "1" and environ["TRANSFORMERS_OFFLINE"] == "1"
    assert changed == environ
    ensure_data_dir(settings, environ)
    assert (tmp_path / "data" / "huggingface").is_dir()


def test_an_explicit_hf_home_and_offline_flag_win(tmp_path: Path) -> None:
    environ = {"HF_HOME": "/models/cache", "HF_HUB_OFFLINE": "1"}
    changed = prepare_environment(Settings(data_dir=tmp_path, offline=False), environ, container=True)
    assert environ["HF_HOME"] == "/models/cache" and environ["HF_HUB_OFFLINE"] == "1"
    assert changed == {"TRANSFORMERS_OFFLINE": "0"}


def test_outside_a_container_the_developer_cache_stays(tmp_path: Path) -> None:
    environ: dict[str, str] = {}
    prepare_environment(Settings(data_dir=tmp_path, offline=False), environ, container=False)
    assert "HF_HOME" not in environ
    assert environ["HF_HUB_OFFLINE"] == "0"  # offline = false lets hub ids download


def test_container_detection(tmp_path: Path) -> None:
    assert not in_container(tmp_path, environ={})
    assert in_container(tmp_path, environ={"container": "podman"})
    (tmp_path / ".dockerenv").write_text("")
    assert in_container(tmp_path, environ={})


# --- the device ------------------------------------------------------------------------------
def test_cuda_check_on_this_machine_says_why_and_falls_back_to_cpu() -> None:
    report = cuda_report("auto")  # the real torch; CI has no GPU
    if report.cuda_usable:  # pragma: no cover - a GPU machine
        assert report.device.startswith("cuda:") and "CUDA usable" in report.summary
    else:
        assert report.device == "cpu"
        assert report.summary.startswith(("device: cpu, CUDA not usable: ",
                                          "device: cpu, no NVIDIA GPU on this machine"))  # fmt: skip


def test_a_laptop_without_a_gpu_is_told_so_without_docker_advice(tmp_path: Path) -> None:
    report = cuda_report("auto", _fake_torch(count=0, build=None), root=tmp_path, environ={})
    assert report.device == "cpu" and not report.gpu_present
    assert "no NVIDIA GPU on this machine" in report.summary and "docker" not in report.summary


def test_a_container_without_a_gpu_is_told_how_to_pass_one(tmp_path: Path) -> None:
    (tmp_path / ".dockerenv").write_text("")
    report = cuda_report("auto", _fake_torch(count=0, init_error="Found no NVIDIA driver on your system."),
                         root=tmp_path, environ={})  # fmt: skip
    assert report.gpu_present and "docker run --gpus all" in report.summary
    assert "Generating on the CPU is slow" in report.summary


def test_an_explicit_cuda_device_that_is_not_usable_is_an_error() -> None:
    with pytest.raises(StartupError, match=r"worker.device = cuda:3, but CUDA is not usable"):
        cuda_report("cuda:3", _fake_torch(count=1))
    with pytest.raises(StartupError, match="only 1 CUDA device"):
        cuda_report("cuda:3", _fake_torch(count=1))
    with pytest.raises(StartupError, match="must be auto, cpu, cuda or cuda:N"):
        cuda_report("gpu", _fake_torch(count=1))


def test_cuda_usable_names_the_device_and_runs_a_kernel() -> None:
    torch = _fake_torch(count=2)
    report = cuda_report("cuda:1", torch)
    assert report.cuda_usable and report.device == "cuda:1"
    assert "cuda:1 (NVIDIA H200, 139.8 GiB), CUDA usable" in report.summary
    assert "CUDA 12.8" in report.summary and "2 device(s)" in report.summary
    assert torch.kernels == ["cuda:1"]
    assert cuda_report("auto", _fake_torch(count=1)).device == "cuda:0"


def test_cuda_reasons_cpu_build_no_driver_broken_kernel() -> None:
    cpu_build = cuda_report("auto", _fake_torch(count=0, build=None))
    assert "torch 2.14.1 is a CPU-only build" in cpu_build.summary and cpu_build.device == "cpu"
    no_driver = cuda_report("auto", _fake_torch(count=0, init_error="Found no NVIDIA driver on your system."))
    assert "CUDA not usable: Found no NVIDIA driver on your system" in no_driver.summary
    broken = cuda_report("auto", _fake_torch(count=1, kernel_error="CUDA error: no kernel image"))
    assert not broken.cuda_usable
    assert "cuda:0 failed a test kernel: CUDA error: no kernel image" in broken.summary
    assert cuda_report("cpu", _fake_torch(count=1)).summary == "device: cpu (worker.device = cpu)"


def test_prepare_worker_refuses_an_unusable_explicit_device(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", worker={"device": "cuda"})
    with pytest.raises(StartupError):
        prepare_worker(settings, environ={}, torch_module=_fake_torch(count=0))
    assert (tmp_path / "data").is_dir()
    ok = prepare_worker(settings, environ={}, torch_module=_fake_torch(count=1))
    assert ok.device == "cuda:0"


def test_hidden_gpus_are_named_in_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    report = cuda_report("auto", _fake_torch(count=0))
    assert "no CUDA device is visible" in report.summary
    assert "CUDA_VISIBLE_DEVICES='' hides every GPU" in report.summary


class _FakeTensor:
    def __init__(self, torch: Any, device: str) -> None:
        self._torch, self._device = torch, device

    def __matmul__(self, other: _FakeTensor) -> _FakeTensor:
        if self._torch.kernel_error:
            raise RuntimeError(self._torch.kernel_error)
        self._torch.kernels.append(self._device)
        return self

    def sum(self) -> _FakeTensor:
        return self

    def item(self) -> float:
        return 262144.0


def _fake_torch(count: int, build: str | None = "12.8", init_error: str = "",
                kernel_error: str = "") -> Any:  # fmt: skip
    """Just the torch surface cuda_report touches, for the GPU branches CI cannot reach."""
    torch = SimpleNamespace(__version__="2.14.1", version=SimpleNamespace(cuda=build),
                            kernels=[], kernel_error=kernel_error)  # fmt: skip

    def init() -> None:
        if init_error:
            raise RuntimeError(init_error)

    torch.cuda = SimpleNamespace(
        init=init,
        device_count=lambda: count,
        get_device_name=lambda i: "NVIDIA H200",
        get_device_properties=lambda i: SimpleNamespace(total_memory=int(139.8 * 2**30)),
    )
    torch.ones = lambda shape, device: _FakeTensor(torch, device)
    return torch


# --- the health check ------------------------------------------------------------------------
def test_healthcheck_url_follows_the_configured_host_and_port() -> None:
    assert healthcheck_url(Settings(host="0.0.0.0", port=9123)) == "http://127.0.0.1:9123/healthz"
    assert healthcheck_url(Settings(host="::", port=80)) == "http://[::1]:80/healthz"
    assert healthcheck_url(Settings(host="10.1.2.3", port=8080)) == "http://10.1.2.3:8080/healthz"
    with pytest.raises(StartupError, match="port is 0"):
        healthcheck_url(Settings(port=0))


@pytest.fixture
def healthz_server() -> Iterator[tuple[int, dict[str, Any]]]:
    state: dict[str, Any] = {"status": 200, "paths": []}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            state["paths"].append(self.path)
            body = json.dumps({"status": "ok" if state["status"] == 200 else "unhealthy"}).encode()
            self.send_response(state["status"])
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], state
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_exit_codes(healthz_server: tuple[int, dict[str, Any]]) -> None:
    port, state = healthz_server
    out = io.StringIO()
    assert healthcheck(Settings(host="0.0.0.0", port=port), out=out) == 0
    assert state["paths"] == ["/healthz"] and out.getvalue().startswith("healthy:")
    state["status"] = 503
    out = io.StringIO()
    assert healthcheck(Settings(host="0.0.0.0", port=port), out=out) == 1
    assert out.getvalue().startswith("unhealthy:") and "503" in out.getvalue()


def test_healthcheck_with_nothing_listening_fails(healthz_server: tuple[int, dict[str, Any]]) -> None:
    port, _ = healthz_server
    out = io.StringIO()
    # The fixture listens on 127.0.0.1 only: the same port on 127.0.0.2 refuses.
    assert healthcheck(Settings(port=port, host="127.0.0.2"), out=out, timeout=2) == 1
    assert out.getvalue().startswith("unhealthy:")


def test_cli_healthcheck_reads_the_settings(healthz_server: tuple[int, dict[str, Any]],
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from gouache.cli import main

    port, state = healthz_server
    monkeypatch.setenv("GOUACHE_HOST", "0.0.0.0")
    monkeypatch.setenv("GOUACHE_PORT", str(port))
    assert main(["healthcheck"]) == 0
    assert "healthy: http://127.0.0.1:" in capsys.readouterr().out
    state["status"] = 503
    assert main(["healthcheck"]) == 1


def test_worker_spawn_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().worker.spawn is True
    monkeypatch.setenv("GOUACHE_WORKER__SPAWN", "false")
    assert Settings.load().worker.spawn is False


# --- models the bot cannot place -------------------------------------------------------------
def test_a_hub_id_without_a_family_is_named_in_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "flux"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    settings = Settings(data_dir=tmp_path / "data", models={
        "hub-auto": {"path": "black-forest-labs/FLUX.1-dev"},
        "hub-named": {"path": "black-forest-labs/FLUX.1-schnell", "family": "flux"},
        "folder": {"path": str(folder)},
    })  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="gouache.startup"):
        prepare_run(settings, environ={}, out=io.StringIO())
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1, warned
    assert "model hub-auto:" in warned[0] and "black-forest-labs/FLUX.1-dev" in warned[0]
    assert "SD's defaults (30 steps, euler-a)" in warned[0] and 'family = "sd"' in warned[0]

"""The deployment files agree with the code: Dockerfile, compose.yaml, docs/deploy.md, deploy/.

No image can be built here (no registry, and podman cannot start containers), so what can be
checked is checked: hadolint, the compose specification's JSON schema, every ``GOUACHE_*``
variable and setting the files name against ``Settings``, and the shape each layout needs.
"""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from gouache.config import ENV_PREFIX, Settings
from gouache.observability import Metrics

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "compose.yaml"
GUIDE = REPO / "docs" / "deploy.md"
DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent

NOT_SETTINGS = {"CONFIG"}  # GOUACHE_CONFIG names the TOML file (Settings.load)


# --- linters ---------------------------------------------------------------------------------
def _tool(name: str) -> str:
    path = BIN / name
    assert path.is_file(), f"{name} is missing from the venv: pip install -e '.[test]'"
    return str(path)


def test_dockerfile_lints_clean_with_hadolint() -> None:
    done = subprocess.run([_tool("hadolint"), "--config", str(REPO / ".hadolint.yaml"), str(DOCKERFILE)],
                          capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_fails_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint is real: a shell-form CMD and an unpinned pip install fail it."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nRUN pip install gouache\nCMD gouache run\n")
    done = subprocess.run([_tool("hadolint"), "--config", str(REPO / ".hadolint.yaml"), str(bad)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode != 0 and "DL3025" in done.stdout and "DL3013" in done.stdout


def test_compose_file_validates_against_the_compose_spec(tmp_path: Path) -> None:
    argv = [_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec"]
    done = subprocess.run([*argv, str(COMPOSE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("capabilities: [gpu]", "capabilities: gpu", 1))
    done = subprocess.run([*argv, str(broken)], capture_output=True, text=True)
    assert done.returncode == 1 and "capabilities" in done.stdout


def test_make_lint_runs_both_checks() -> None:
    lint = _make_recipe("lint")
    assert "$(VENV)/bin/hadolint Dockerfile" in lint
    assert "$(VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec compose.yaml" in lint


# --- one install script ----------------------------------------------------------------------
def _make_recipe(target: str) -> str:
    text = (REPO / "Makefile").read_text()
    found = re.search(rf"^{re.escape(target)}:[^\n]*\n((?:\t[^\n]*\n)+)", text, re.MULTILINE)
    assert found, target
    return found.group(0)


def test_the_image_and_ci_install_with_the_same_script() -> None:
    run_lines = [line for line in _dockerfile_instructions() if line.startswith("RUN ")]
    assert any("bash scripts/install.sh --venv /opt/gouache --require-cuda-build" in x for x in run_lines)
    assert not any("pip install" in x for x in run_lines)  # nothing installed beside the script
    stamp = _make_recipe("$(STAMP)")
    assert "scripts/install.sh" in stamp.splitlines()[0]  # a changed script rebuilds the venv
    assert "bash scripts/install.sh --venv $(VENV) --editable --extras test" in stamp
    assert "pip install" not in stamp
    assert "$(STAMP)" in _make_recipe("lint").splitlines()[0]
    assert re.search(r"^test: lint\b", (REPO / "Makefile").read_text(), re.MULTILINE)
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.MULTILINE)
    # What the script needs travels into the build context.
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    for needed in ("pyproject.toml", "README.md", "scripts/install.sh", "gouache/"):
        assert f"!{needed}" in ignore


def test_the_install_script_rejects_unknown_options() -> None:
    done = subprocess.run(["bash", str(REPO / "scripts" / "install.sh"), "--bogus"],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2 and "unknown option --bogus" in done.stderr


# --- the Dockerfile's shape ------------------------------------------------------------------
def _dockerfile_instructions() -> list[str]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def _dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in _dockerfile_instructions():
        if line.startswith("ENV "):
            for pair in shlex.split(line[4:]):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def test_dockerfile_runs_gouache_as_a_non_root_user_on_one_data_volume() -> None:
    lines = _dockerfile_instructions()
    base = next(x for x in lines if x.startswith("FROM "))
    assert re.fullmatch(r"FROM python:3\.11-slim-\w+", base)  # requires-python >= 3.11, CI's 3.11
    user = [x for x in lines if x.startswith("USER ")]
    assert user == ["USER 10001:10001"]
    assert 'VOLUME ["/data"]' in lines
    env = _dockerfile_env()
    assert env["GOUACHE_DATA_DIR"] == "/data"
    assert env["HF_HOME"].startswith("/data/")  # the model cache is on the volume
    assert env["GOUACHE_HOST"] == "0.0.0.0" and "GOUACHE_WEB__TOKEN" not in env
    assert f"EXPOSE {env['GOUACHE_PORT']}" in lines
    health = next(x for x in lines if x.startswith("HEALTHCHECK "))
    assert health.endswith('CMD ["gouache", "healthcheck"]')  # reads GOUACHE_PORT: no port here
    assert "8080" not in health
    assert lines[-1] == 'CMD ["gouache", "run"]'
    assert "--start-period=" in health


def _apt_installed(lines: list[str]) -> dict[str, str]:
    """``package -> pinned version`` of every ``apt-get install`` in ``lines`` (one stage)."""
    packages: dict[str, str] = {}
    for line in lines:
        if not line.startswith("RUN "):
            continue
        for command in re.split(r"&&|;", line[4:]):
            words = shlex.split(command)
            if words[:2] == ["apt-get", "install"]:
                for word in words[2:]:
                    if not word.startswith("-"):
                        name, _, version = word.partition("=")
                        packages[name] = version
    return packages


def test_the_runtime_image_carries_the_compilers_torch_compile_needs() -> None:
    """speed.compile = "on": Triton builds its launchers with a C compiler on CUDA, Inductor its
    CPU kernels with g++ (gouache.generation.loop.speed.compile_missing checks the same)."""
    lines = _dockerfile_instructions()
    last_from = max(i for i, x in enumerate(lines) if x.startswith("FROM "))
    runtime = lines[last_from:]  # the stage the image is, were a build stage added before it
    installed = _apt_installed(runtime)
    assert {"gcc", "g++"} <= set(installed), installed
    assert all(installed[name] for name in ("gcc", "g++")), "pinned, as hadolint DL3008 asks"
    install = next(x for x in runtime if "apt-get install" in x)
    assert "--no-install-recommends" in install and "rm -rf /var/lib/apt/lists/*" in install
    # Installed as root, before the image drops to the gouache user.
    assert runtime.index(install) < runtime.index("USER 10001:10001")
    env = _dockerfile_env()  # the kernel caches live on the volume: a restart reuses them
    assert env["TORCHINDUCTOR_CACHE_DIR"].startswith("/data/")
    assert env["TRITON_CACHE_DIR"].startswith("/data/")


def test_apt_install_parsing_reads_only_install_commands() -> None:
    lines = ["RUN apt-get update && apt-get install -y --no-install-recommends gcc=1 g++=2 "
             "&& rm -rf /x", "RUN echo apt-get install nope", "COPY a b"]  # fmt: skip
    assert _apt_installed(lines) == {"gcc": "1", "g++": "2"}


def test_every_cli_command_the_files_run_exists() -> None:
    from gouache.cli import build_parser

    parser = build_parser()
    commands: list[list[str]] = [["gouache", "run"], ["gouache", "healthcheck"]]
    for service in _compose()["services"].values():
        if isinstance(service.get("command"), list) and service["command"][0] == "gouache":
            commands.append(service["command"])
    for argv in commands:
        parser.parse_args(argv[1:])  # SystemExit on an unknown command or option


# --- compose ---------------------------------------------------------------------------------
def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


def test_compose_all_in_one_has_a_gpu_and_the_data_volume() -> None:
    compose = _compose()
    box = compose["services"]["gouache"]
    assert box["profiles"] == ["all-in-one"] and box["command"] == ["gouache", "run"]
    [gpu] = _gpu_devices(box)
    assert gpu["capabilities"] == ["gpu"] and gpu["count"] == 1
    assert "gouache-data:/data" in box["volumes"] and "gouache-data" in compose["volumes"]
    assert box["environment"].get("GOUACHE_WORKER__SPAWN", "true") != "false"
    assert "GOUACHE_DATABASE_URL_FILE" not in box["environment"]  # SQLite on /data


def test_compose_scale_out_has_postgres_one_bot_and_one_worker_per_gpu() -> None:
    compose = _compose()
    services = compose["services"]
    scale = {name: s for name, s in services.items() if "scale-out" in s.get("profiles", [])}
    assert {"postgres", "bot"} <= set(scale)
    assert not set(scale) & {n for n, s in services.items() if "all-in-one" in s.get("profiles", [])}
    postgres = scale["postgres"]
    assert "pg_isready" in postgres["healthcheck"]["test"]
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"

    bot = scale["bot"]
    assert bot["command"] == ["gouache", "run"]
    assert bot["environment"]["GOUACHE_WORKER__SPAWN"] == "false"
    assert Settings(worker={"spawn": bot["environment"]["GOUACHE_WORKER__SPAWN"]}).worker.spawn is False
    assert not _gpu_devices(bot)
    assert bot["depends_on"]["postgres"]["condition"] == "service_healthy"

    workers = {n: s for n, s in scale.items() if s.get("command", [None, None])[:2] == ["gouache", "worker"]}
    assert len(workers) >= 2
    gpus: list[str] = []
    ids: list[str] = []
    for worker in workers.values():
        [device] = _gpu_devices(worker)
        assert device["capabilities"] == ["gpu"] and "count" not in device
        gpus += device["device_ids"]
        ids.append(worker["command"][worker["command"].index("--worker-id") + 1])
        assert worker["environment"]["GOUACHE_DATABASE_URL_FILE"] == "/run/secrets/database_url"
        assert worker["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert worker["healthcheck"] == {"disable": True}  # no HTTP in a worker
        assert any(v.endswith(":/data") for v in worker["volumes"])
    assert len(set(gpus)) == len(gpus) == len(workers)  # each on its own GPU
    assert len(set(ids)) == len(ids)


def test_compose_secret_files_are_declared_and_mounted() -> None:
    compose = _compose()
    declared = compose["secrets"]
    for name, service in compose["services"].items():
        mounted = set(service.get("secrets", []))
        assert mounted <= set(declared), name
        for key, value in (service.get("environment") or {}).items():
            if key.endswith("_FILE"):
                assert value.startswith("/run/secrets/"), (name, key)
                assert value.removeprefix("/run/secrets/") in mounted, (name, key)
    for secret in declared.values():
        assert secret["file"].startswith("./secrets/")
    # The guide's setup creates every one of them.
    guide = GUIDE.read_text()
    for name in declared:
        assert f"secrets/{name}" in guide, name


def test_empty_secret_file_means_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """compose needs every secret file to exist; an empty one leaves that platform off."""
    empty = tmp_path / "discord_token"
    empty.write_text("\n")
    monkeypatch.setenv("GOUACHE_DISCORD__TOKEN_FILE", str(empty))
    assert Settings.load().discord.token is None
    empty.write_text("abc.def.ghi\n")
    token = Settings.load().discord.token
    assert token is not None and token.get_secret_value() == "abc.def.ghi"


# --- every name the files use is a real setting ----------------------------------------------
def _field_path_exists(parts: list[str], model: type[BaseModel] = Settings) -> bool:
    field = model.model_fields.get(parts[0])
    if field is None:
        return False
    rest = parts[1:]
    if not rest:
        return True
    annotation = field.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _field_path_exists(rest, annotation)
    if typing.get_origin(annotation) is dict:  # models.<name>.<ModelSpec field>
        value = typing.get_args(annotation)[1]
        return len(rest) == 1 or (isinstance(value, type) and issubclass(value, BaseModel)
                                  and _field_path_exists(rest[1:], value))  # fmt: skip
    return False


def _env_to_path(name: str) -> list[str]:
    body = name[len(ENV_PREFIX):]
    body = body.removesuffix("_FILE")
    return body.lower().split("__")


def _check(path: list[str]) -> bool:
    return _field_path_exists(path)


def _named_variables() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    texts = {
        "Dockerfile": DOCKERFILE.read_text(),
        "compose.yaml": COMPOSE.read_text(),
        "docs/deploy.md": GUIDE.read_text(),
        **{str(p.relative_to(REPO)): p.read_text() for p in sorted(DEPLOY.rglob("*"))
           if p.is_file() and p.suffix in (".yml", ".yaml", ".toml")},
    }
    for where, text in texts.items():
        for name in re.findall(r"\bGOUACHE_[A-Z0-9_]*[A-Z0-9]\b", text):
            found.setdefault(name, set()).add(where)
    return found


def test_every_gouache_variable_named_is_a_setting() -> None:
    named = _named_variables()
    assert len(named) >= 20  # the files do name them (a broken regex would pass vacuously)
    assert {"GOUACHE_DISCORD__TOKEN_FILE", "GOUACHE_WORKER__SPAWN", "GOUACHE_DATABASE_URL_FILE",
            "GOUACHE_WEB__TOKEN_FILE", "GOUACHE_PORT", "GOUACHE_DATA_DIR"} <= set(named)  # fmt: skip
    unknown = {
        name: sorted(where) for name, where in named.items()
        if name[len(ENV_PREFIX):] not in NOT_SETTINGS and not _check(_env_to_path(name))
    }  # fmt: skip
    assert not unknown, f"not in gouache/config.py's Settings: {unknown}"


def test_variables_really_reach_the_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Not only names: values as the compose file and guide write them load as intended."""
    secret = tmp_path / "database_url"
    secret.write_text("postgresql://gouache:pw@postgres:5432/gouache\n")
    for key, value in {
        "GOUACHE_WORKER__SPAWN": "false", "GOUACHE_WORKER__DEVICE": "cuda", "GOUACHE_OFFLINE": "false",
        "GOUACHE_DATABASE_URL_FILE": str(secret), "GOUACHE_DEFAULT_MODEL": "sd15",
        "GOUACHE_MODELS__SD15__PATH": "/models/stable-diffusion-v1-5",
        "GOUACHE_DISCORD__GUILD_IDS": '["123456789012345678"]', "GOUACHE_DISCORD__APPLICATION_ID": "",
        "GOUACHE_BATCHING__MAX_BATCH_IMAGES": "4", "GOUACHE_CONFIG": "",
    }.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    s = Settings.load()
    assert s.worker.spawn is False and s.worker.device == "cuda" and s.offline is False
    assert s.resolved_database_url == "postgresql://gouache:pw@postgres:5432/gouache"
    assert s.models["sd15"].path == "/models/stable-diffusion-v1-5" and s.default_model == "sd15"
    assert s.discord.guild_ids == ["123456789012345678"] and not s.discord.application_id
    assert s.batching.max_batch_images == 4


def _toml_blocks() -> list[dict[str, Any]]:
    return [tomllib.loads(b) for b in re.findall(r"```toml\n(.*?)```", GUIDE.read_text(), re.DOTALL)]


def _toml_paths(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[list[str]]:
    paths: list[list[str]] = []
    for key, value in data.items():
        path = (*prefix, key)
        paths.append(list(path))
        if isinstance(value, dict):
            paths += _toml_paths(value, path)
    return paths


def test_the_guides_toml_snippets_are_valid_settings(tmp_path: Path) -> None:
    blocks = _toml_blocks()
    assert len(blocks) >= 2
    for i, block in enumerate(blocks):
        bad = [".".join(p) for p in _toml_paths(block) if not _check(p)]
        assert not bad, f"toml block {i}: unknown settings {bad}"  # extra="ignore" would hide them
        config = tmp_path / f"gouache-{i}.toml"
        config.write_text(re.findall(r"```toml\n(.*?)```", GUIDE.read_text(), re.DOTALL)[i])
        Settings.load(config)  # and they validate


def test_dotted_setting_names_in_the_guide_exist() -> None:
    sections = {n for n, f in Settings.model_fields.items()
                if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)}  # fmt: skip
    text = GUIDE.read_text()
    named = set(re.findall(r"`([a-z_]+(?:\.[a-z_]+)+)(?: = [^`]*)?`", text))
    named = {n for n in named if n.split(".")[0] in sections}
    assert {"worker.spawn", "batching.max_batch_images", "worker.device", "slack.app_token"} <= named
    for name in re.findall(r"`([a-z_]+) = [^`]*`", text):
        assert _check([name]), name
    bad = sorted(n for n in named if not _check(n.split(".")))
    assert not bad, bad


# --- metrics, Slack, Discord -----------------------------------------------------------------
def _metric_names() -> set[str]:
    registry = CollectorRegistry()
    Metrics(registry)
    names: set[str] = set()
    for family in registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":  # labelled counters have no samples until used
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
    return names


def test_metric_names_in_the_guide_and_rules_exist() -> None:
    known = _metric_names()
    rules = yaml.safe_load((DEPLOY / "gouache-rules.yml").read_text())
    exprs = " ".join(r["expr"] for g in rules["groups"] for r in g["rules"])
    for where, text in (("docs/deploy.md", GUIDE.read_text()), ("deploy/gouache-rules.yml", exprs)):
        used = set(re.findall(r"\bgouache_[a-z_]+\b", text))
        assert {"gouache_queue_depth", "gouache_queue_wait_seconds_bucket",
                "gouache_batch_size_images_sum"} <= used, where  # fmt: skip
        assert used <= known, (where, sorted(used - known))
    records = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    for needed in ("gouache:queue_depth", "gouache:queue_wait_seconds:p95_5m",
                   "gouache:batch_occupancy:ratio_5m"):  # fmt: skip
        assert needed in records
    batching = Settings().batching  # the most images one claim takes (worker/loop.py)
    default_batch = batching.max_rows // 2 if batching.mode == "step" else batching.max_batch_images
    for text in (exprs, GUIDE.read_text()):  # occupancy divides by the default batch size
        assert re.search(rf"/ {default_batch}\b", text)


def test_prometheus_scrape_config_reaches_metrics_with_the_token() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    for rule_file in config["rule_files"]:
        assert (DEPLOY / rule_file).is_file()
    [job] = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["type"] == "Bearer" and job["authorization"]["credentials_file"]
    [target] = job["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host in _compose()["services"] and int(port) == Settings().port


def test_slack_http_manifest_is_the_socket_manifest_with_request_urls() -> None:
    """tests/integration/test_slack_manifest.py holds slack-manifest.yaml to the adapter; the
    HTTP variant must be that same app, pointed at the path the adapter serves."""
    from gouache.bot.adapters.slack import app as slack_app
    from gouache.web import app as web_app

    assert slack_app.SLACK_PATH in web_app._OPEN_PATHS  # signed by Slack, not by the web token
    socket = yaml.safe_load((DEPLOY / "slack-manifest.yaml").read_text())
    http = yaml.safe_load((DEPLOY / "slack-manifest-http.yaml").read_text())
    assert socket["settings"]["socket_mode_enabled"] is True
    assert http["settings"]["socket_mode_enabled"] is False
    commands = http["features"]["slash_commands"]
    assert [c["command"] for c in commands] == list(slack_app.COMMANDS)
    settings = http["settings"]
    urls = [c["url"] for c in commands] + [settings["event_subscriptions"]["request_url"],
                                           settings["interactivity"]["request_url"]]  # fmt: skip
    assert all(u.startswith("https://") and u.endswith(slack_app.SLACK_PATH) for u in urls)
    # Apart from the URLs and the mode, the two apps are the same app.
    for command in commands:
        del command["url"]
    del settings["event_subscriptions"]["request_url"], settings["interactivity"]["request_url"]
    settings["socket_mode_enabled"] = True
    assert http == socket


def test_discord_commands_invite_link_and_intents_in_the_guide_match_the_client() -> None:
    import discord

    from gouache.bot.adapters.discord.client import INVITE_SCOPES, invite_permissions

    folder = REPO / "gouache" / "bot" / "adapters" / "discord"
    source = "\n".join(p.read_text() for p in sorted(folder.glob("*.py")))
    calls = [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)]

    def names(func: str) -> set[str]:
        return {kw.value.value for node in calls
                if getattr(node.func, "attr", "") == func or getattr(node.func, "id", "") == func
                for kw in node.keywords if kw.arg == "name" and isinstance(kw.value, ast.Constant)}  # fmt: skip

    groups = names("Group")
    subcommands = names("command")
    top_level = {n for n in subcommands if f'@app_commands.command(name="{n}"' in source}
    grouped = {n for n in subcommands if f'@group.command(name="{n}"' in source}
    assert {"imagine", "depth", "diversity"} <= top_level and groups
    guide = GUIDE.read_text()
    for name in top_level:
        assert f"`/{name}`" in guide, name
    for group in groups:
        for name in grouped:
            assert f"`/{group} {name}`" in guide, (group, name)
    link = discord.utils.oauth_url("APPLICATION_ID", permissions=invite_permissions(), scopes=INVITE_SCOPES)
    assert link in guide  # the same link the bot logs at start
    assert "discord.Intents(guilds=True, guild_messages=True, dm_messages=True)" in source
    assert "`Guilds` intent" in guide and "`Guild Messages`" in guide

"""Command line: `gouache run | worker | migrate | healthcheck | generate | evaluate |
diversity | scaling-query | keda-role`. Parsing only; no logic here.

Every option names the ``GOUACHE_*`` variable it overrides, so ``--help`` doubles as the
configuration reference for the things people change most.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gouache import __version__
from gouache.config import Settings
from gouache.errors import CompileError, UserError

__all__ = ["main", "build_parser", "split_prompt"]


def _common(parser: argparse.ArgumentParser, *, queue: bool = True) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML settings file (GOUACHE_CONFIG)")
    parser.add_argument("--data-dir", type=Path, help="state directory (GOUACHE_DATA_DIR, default ./data)")
    if queue:  # generate and diversity run straight through the engine: no database
        parser.add_argument("--database-url", help="sqlite:///path or postgresql://... (GOUACHE_DATABASE_URL)")
    parser.add_argument("--model", dest="default_model", help="default model name (GOUACHE_DEFAULT_MODEL)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING (GOUACHE_LOG_LEVEL)")


# `generate` and `diversity` take the chat command language: every word that is not one of
# these options (with its value) belongs to the prompt, inside the quotes or outside them.
_LOCAL_OPTIONS = {"-o": 1, "--out": 1, "--file": 1, "--image": 1, "--config": 1, "--data-dir": 1,
                  "--model": 1, "--log-level": 1, "-h": 0, "--help": 0}  # fmt: skip
_PROMPT_FLAGS = """\
prompt flags (inside or outside the quotes, as in chat):
  --ar 16:9 | --size 768x512   aspect ratio or exact size
  --seed 7                     seed (image i uses seed + i)
  --steps 30, --cfg 6.5        denoising steps, guidance
  --no blurry, text            negative prompt
  --n 4                        images (default 1; /diversity: limits.diversity_count, 4)
  --sampler NAME               ddim, euler-a, dpmpp-2m-karras, ...
  --gif                        also write the denoising GIF
  --sweep cfg=3,7,12           a parameter sweep (twice for a 2-D grid)
  --process                    the forward and reverse process as a GIF and a strip
  --strength 0.8, --input photo  /depth: ControlNet scale, how to read the file
  --strength 0.6               with --image: how much of the image is redrawn (0-1)
  --scale 2                    /upscale (needs --image): the size factor (at most 4)
  --enlarge [METHOD]           /diversity: spread the set (default method: variants)
commands: start the prompt with /depth (needs --file), /upscale (needs --image), /diversity or
/interpolate <prompt A> | <prompt B> [--seed A,B] [--frames 16]; none means /imagine.
files are named as the web API names them: image-0.png, denoise-0.gif, depth.png,
grid.png, report.json, report.png, interpolation.gif, strip.png, process.gif.
"""


def split_prompt(argv: Sequence[str]) -> tuple[list[str], str]:
    """(the local options with their values, the prompt text) from ``generate``'s arguments."""
    options: list[str] = []
    words: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        name = word.split("=", 1)[0]
        if name in _LOCAL_OPTIONS:
            takes = _LOCAL_OPTIONS[name] if "=" not in word else 0
            options += argv[i : i + 1 + takes]
            i += 1 + takes
        else:
            words.append(word)
            i += 1
    return options, " ".join(words)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gouache", description="Self-hosted image-generation bot")
    parser.add_argument("--version", action="version", version=f"gouache {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="all-in-one service: web playground, chat adapters, worker")
    _common(run)
    run.add_argument("--host", help="listen address (GOUACHE_HOST, default 127.0.0.1)")
    run.add_argument("--port", type=int, help="listen port (GOUACHE_PORT, default 8080)")
    run.add_argument("--no-worker", action="store_true",
                     help="scale-out: start no worker child; run `gouache worker` processes "
                     "against the same database")  # fmt: skip

    worker = sub.add_parser("worker", help="a GPU worker that claims batches from the queue")
    _common(worker)
    worker.add_argument("--worker-id", help="stable id for this worker (default: host-pid)")

    migrate = sub.add_parser("migrate", help="create or upgrade the database schema")
    _common(migrate)

    scaling = sub.add_parser("scaling-query", help="the SQL KEDA runs to size a worker Deployment")
    _common(scaling)
    scaling.add_argument("--images-per-worker", type=int, required=True,
                         help="queued + running images one worker serves (KEDA target)")  # fmt: skip
    scaling.add_argument("--models", default="",
                         help="the model group, comma-separated (default: every model)")  # fmt: skip
    scaling.add_argument("--run", action="store_true",
                         help="run it against the configured PostgreSQL and print the worker count")  # fmt: skip

    keda = sub.add_parser("keda-role", help="create or update the read-only role KEDA connects as")
    _common(keda)
    keda.add_argument("--connection-file", type=Path, required=True,
                      help="file with KEDA's postgresql://USER:PASSWORD@... URL (the role to create)")  # fmt: skip

    health = sub.add_parser("healthcheck", help="exit 0 when /healthz on the configured port is OK")
    _common(health, queue=False)
    health.add_argument("--host", help="the service's listen address (GOUACHE_HOST)")
    health.add_argument("--port", type=int, help="the service's port (GOUACHE_PORT)")

    gen = sub.add_parser("generate", help="generate images locally, without the queue",
                         formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_PROMPT_FLAGS,
                         usage="gouache generate [options] PROMPT [prompt flags]")  # fmt: skip
    _common(gen, queue=False)
    gen.add_argument("prompt", metavar="PROMPT", nargs="*",
                     help='e.g. a red circle --seed 3 --n 2 (quoted or not)')  # fmt: skip
    gen.add_argument("-o", "--out", type=Path, default=Path("out"),
                     help="output folder (default: out/ in the current directory)")  # fmt: skip
    gen.add_argument("--file", type=Path, metavar="FILE",
                     help="depth map (PNG, .npy) or photo (JPEG, WEBP, PNG): makes it a /depth "
                          "command; also writes the depth map used")  # fmt: skip
    gen.add_argument("--image", type=Path, metavar="FILE",
                     help="an image to start from (PNG, JPEG, WEBP): a remix with /imagine "
                          "(--strength, default 0.6), or the image /upscale enlarges")  # fmt: skip

    div = sub.add_parser("diversity", help="a scored /diversity set, locally: report, images, composite",
                         formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_PROMPT_FLAGS,
                         usage="gouache diversity [options] PROMPT [prompt flags]")  # fmt: skip
    _common(div, queue=False)
    div.add_argument("prompt", metavar="PROMPT", nargs="*",
                     help="e.g. a red circle --n 8 --enlarge cads --seed 5")  # fmt: skip
    div.add_argument("-o", "--out", type=Path, default=Path("out"),
                     help="output folder (default: out/ in the current directory)")  # fmt: skip

    # Offline code (the demo world and judge) lives in tools/, which the runtime never imports:
    # this runs `python -m tools.evaluate` from a source checkout in a child process.
    ev = sub.add_parser("evaluate", add_help=False,
                        help="sampler evaluation on builtin:demo: FID, KID, judge accuracy (a source checkout)")  # fmt: skip
    ev.add_argument("evaluate_args", nargs=argparse.REMAINDER, help="see gouache evaluate --help")
    return parser


def _evaluate(args: Sequence[str]) -> int:
    import os
    import subprocess

    root = Path(__file__).resolve().parents[1]
    if not (root / "tools" / "evaluate.py").is_file():
        print("gouache: evaluate needs a source checkout (tools/evaluate.py); run it from one", file=sys.stderr)
        return 2
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    return subprocess.call([sys.executable, "-m", "tools.evaluate", *args], cwd=root, env=env)


def _settings(args: argparse.Namespace) -> Settings:
    keys = ("data_dir", "database_url", "default_model", "log_level", "host", "port")
    overrides: dict[str, Any] = {k: v for k in keys if (v := getattr(args, k, None)) is not None}
    return Settings.load(args.config, **overrides)


def _scaling_query(settings: Settings, args: argparse.Namespace) -> int:
    from gouache.storage.scaling import desired_workers, scaling_query

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    try:
        sql = scaling_query(args.images_per_worker, models)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    if not args.run:
        print(sql)
        return 0
    print(asyncio.run(desired_workers(settings.resolved_database_url, args.images_per_worker, models)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["evaluate"]:  # every other argument belongs to tools/evaluate.py
        return _evaluate(argv[1:])
    if argv[:1] in (["generate"], ["diversity"]):
        options, prompt = split_prompt(argv[1:])
        argv = [argv[0], *options] + (["--", prompt] if prompt else [])
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"gouache: bad configuration: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "run":
            from gouache.service import run_service

            return asyncio.run(run_service(settings, spawn_worker=not args.no_worker))
        if args.command == "worker":
            from gouache.worker.main import run_worker_process

            return run_worker_process(settings, worker_id=args.worker_id)
        if args.command == "healthcheck":
            from gouache.startup import healthcheck

            return healthcheck(settings)
        if args.command == "migrate":
            from gouache.storage import migrate_database

            asyncio.run(migrate_database(settings.resolved_database_url))
            return 0
        if args.command == "scaling-query":
            return _scaling_query(settings, args)
        if args.command == "keda-role":
            from gouache.storage.scaling import ensure_reader_role_from_url

            url = args.connection_file.read_text(encoding="utf-8").strip()
            try:
                role = asyncio.run(ensure_reader_role_from_url(settings.resolved_database_url, url))
            except ValueError as exc:
                raise UserError(str(exc)) from exc
            print(f"role {role}: may read jobs.status, jobs.model and jobs.images")
            return 0
        prompt = " ".join(args.prompt)
        if not prompt.strip():
            print(f"gouache {args.command}: give a prompt, e.g. gouache {args.command} a red circle "
                  "--seed 3", file=sys.stderr)  # fmt: skip
            return 2
        if args.command == "diversity":
            from gouache.diversity_cli import diversity_to_dir

            run = diversity_to_dir(settings, prompt, args.out)
            print(run.text)
            print(f"wrote {len(run.written)} files to {args.out}")
            return 0
        from gouache.generate import generate_to_dir

        if args.image is not None and args.file is not None:
            print("gouache: give --file (a /depth map) or --image (an image to start from), not both",
                  file=sys.stderr)  # fmt: skip
            return 2
        if args.image is not None:
            written = generate_to_dir(settings, prompt, args.out, upload=args.image, image=True)
        else:
            written = generate_to_dir(settings, prompt, args.out, upload=args.file)
        for path in written:
            print(path)
        return 0
    except UserError as exc:
        print(f"gouache: {exc.message}", file=sys.stderr)
        return 2
    except CompileError as exc:
        print(f"gouache: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"gouache: no such file: {exc.filename}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

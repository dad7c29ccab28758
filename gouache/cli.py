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
from gouache.errors import UserError
from gouache.request import ENLARGE_METHODS

__all__ = ["main", "build_parser"]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML settings file (GOUACHE_CONFIG)")
    parser.add_argument("--data-dir", type=Path, help="state directory (GOUACHE_DATA_DIR, default ./data)")
    parser.add_argument("--database-url", help="sqlite:///path or postgresql://... (GOUACHE_DATABASE_URL)")
    parser.add_argument("--model", dest="default_model", help="default model name (GOUACHE_DEFAULT_MODEL)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING (GOUACHE_LOG_LEVEL)")


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
    _common(health)
    health.add_argument("--host", help="the service's listen address (GOUACHE_HOST)")
    health.add_argument("--port", type=int, help="the service's port (GOUACHE_PORT)")

    gen = sub.add_parser("generate", help="generate images locally, without the queue")
    _common(gen)
    gen.add_argument("command_text", metavar="PROMPT", help='e.g. "a red fox --ar 3:2 --seed 7 --n 2"')
    gen.add_argument("-o", "--out", type=Path, default=Path("out"), help="output directory")
    gen.add_argument("--gif", action="store_true", help="also write the denoising GIF")
    gen.add_argument("--depth", type=Path, metavar="FILE",
                     help="generate with /depth from this depth map (PNG, .npy) or photo (JPEG, "
                          "WEBP, PNG); also writes the depth map used")  # fmt: skip
    gen.add_argument("--file", type=Path, help="depth map or photo for a prompt starting with /depth")

    div = sub.add_parser("diversity", help="a scored /diversity set, locally: report, images, composite")
    _common(div)
    div.add_argument("prompt", metavar="PROMPT", help='e.g. "a lighthouse"')
    div.add_argument("--n", type=int, default=8, help="images in the set (default 8)")
    div.add_argument("--enlarge", choices=ENLARGE_METHODS, default="",
                     help="also run the set enlarged by this method on the same seeds")  # fmt: skip
    div.add_argument("--seed", type=int, help="seed of image 1 (image i uses seed + i - 1)")
    div.add_argument("-o", "--out", type=Path, default=Path("out"), help="output directory")

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
        if args.command == "diversity":
            from gouache.diversity_cli import diversity_to_dir

            run = diversity_to_dir(settings, args.prompt, args.out, count=args.n,
                                   enlarge=args.enlarge, seed=args.seed)  # fmt: skip
            print(run.text)
            print(f"wrote {len(run.written)} files to {args.out}")
            return 0
        from gouache.generate import generate_to_dir

        written = generate_to_dir(
            settings, args.command_text, args.out, gif=args.gif, upload=args.file,
            depth=args.depth,
        )  # fmt: skip
        for path in written:
            print(path)
        return 0
    except UserError as exc:
        print(f"gouache: {exc.message}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"gouache: no such file: {exc.filename}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

"""``console-proxy serve``, ``check-config``, ``recordings prune``, ``demo``: parse arguments,
build the app, run it."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import proxy
from proxy.app import assets_dir
from proxy.config import Config, ConfigError, load_config
from proxy.configdump import to_json, to_toml
from proxy.observe.logs import LEVELS, configure_logging
from proxy.relay.tls import client_context
from proxy.relay.tuning import tune_malloc
from proxy.server import run_server
from proxy.workers.role import WorkerRole
from proxy.workers.supervisor import Supervisor, resolve_workers

log = logging.getLogger("proxy")

DISTRIBUTION = "zstack-console-proxy"


def package_version() -> str:
    """The installed distribution's version; the source's when run from a bare checkout."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return proxy.__version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="console-proxy", description=__doc__)
    parser.add_argument("--version", action="version", version=f"console-proxy {package_version()}")
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LEVELS,
        help="DEBUG, INFO, WARNING or ERROR (overrides [log] level)",
    )
    config_flags = argparse.ArgumentParser(add_help=False)
    config_flags.add_argument("--config", help="TOML config file")
    config_flags.add_argument("--listen", help="HOST:PORT to listen on ([server] listen)")
    config_flags.add_argument(
        "--zstack-url", help="ZStack API base URL incl. /zstack ([zstack] url)"
    )
    config_flags.add_argument("--token-file", help="websockify TokenFile file or directory")
    config_flags.add_argument(
        "--workers", help="processes on the one port: a number or 'auto' ([server] workers)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve_command = commands.add_parser(
        "serve", parents=[config_flags], help="run the console proxy"
    )
    # Set by the supervisor of `serve --workers N` on the workers it starts: its hub's socket.
    serve_command.add_argument("--worker-of", help=argparse.SUPPRESS)
    check = commands.add_parser(
        "check-config",
        parents=[config_flags],
        help="check the configuration and print it (file < environment < flags), secrets redacted",
    )
    check.add_argument("--format", choices=("toml", "json"), default="toml")
    recordings = commands.add_parser("recordings", help="console recordings ([recording] dir)")
    recordings_commands = recordings.add_subparsers(dest="action", required=True)
    recordings_commands.add_parser(
        "prune",
        parents=[config_flags],
        help="remove recordings past retention_days, then the oldest beyond max_total_bytes",
    )
    demo = commands.add_parser("demo", help="run a self-contained demo (no ZStack needed)")
    demo.add_argument("--listen", default="127.0.0.1:6080", help="HOST:PORT (default %(default)s)")
    return parser


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    flags = {
        "listen": "server.listen",
        "zstack_url": "zstack.url",
        "token_file": "tickets.token_file",
        "workers": "server.workers",
    }
    return {key: getattr(args, name) for name, key in flags.items() if getattr(args, name, None)}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        return check_config(args)
    if args.command == "recordings":
        return prune_recordings(args)
    install_uvloop()
    tune_malloc()
    try:
        if args.command == "demo":
            from proxy.demo.run import run_demo

            configure_logging("text", args.log_level or "INFO")
            return run_demo(args.listen)
        # Until logging is configured, a warning while loading goes to stderr as plain text.
        config = load_config(args.config, os.environ, overrides_from(args))
        configure_logging(config.log.format, args.log_level or config.log.level)
        # Files named by the config (TLS certificates, ...) are read at start: still its errors.
        if args.worker_of:
            serve(config, WorkerRole(args.worker_of, resolve_workers(config.server.workers)))
        elif (workers := resolve_workers(config.server.workers)) > 1:
            given = list(sys.argv[1:] if argv is None else argv)
            return asyncio.run(Supervisor(config, given, workers).run())
        else:
            serve(config)
    except ConfigError as exc:
        print(f"console-proxy: {exc}", file=sys.stderr)
        return 2
    return 0


def check_config(args: argparse.Namespace) -> int:
    """Load the config as ``serve`` would and print it; 2 with the key's error when it is bad."""
    try:
        config = load_config(args.config, os.environ, overrides_from(args))
        client_context(config.tls)  # the [tls] files are read at start-up too
    except ConfigError as exc:
        print(f"console-proxy: {exc}", file=sys.stderr)
        return 2
    if args.format == "json":
        sys.stdout.write(to_json(config))
    else:
        sys.stdout.write(f"# console pages and static files from {assets_dir(config)}\n")
        sys.stdout.write(to_toml(config))
    return 0


def prune_recordings(args: argparse.Namespace) -> int:
    """Apply ``[recording]`` retention once (for cron or a Kubernetes CronJob)."""
    from proxy.recording.store import RecordingStore

    try:
        config = load_config(args.config, os.environ, overrides_from(args))
    except ConfigError as exc:
        print(f"console-proxy: {exc}", file=sys.stderr)
        return 2
    settings = config.recording
    if not settings.dir:
        print("console-proxy: recording is off ([recording] dir is empty)", file=sys.stderr)
        return 2
    store = RecordingStore(Path(settings.dir))
    removed = store.prune(settings.retention_days, settings.max_total_bytes)
    for ident in removed:
        print(f"removed {ident}")
    print(f"{len(removed)} recording(s) removed")
    return 0


def serve(config: Config, worker: WorkerRole | None = None) -> None:
    asyncio.run(run_server(config, worker=worker))


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


if __name__ == "__main__":
    sys.exit(main())

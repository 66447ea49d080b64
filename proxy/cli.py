"""``console-proxy serve`` and ``console-proxy demo``: parse arguments, build the app, run it."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from proxy.config import Config, ConfigError, load_config
from proxy.relay.tuning import tune_malloc
from proxy.server import run_server

log = logging.getLogger("proxy")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="console-proxy", description=__doc__)
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the console proxy")
    serve.add_argument("--config", help="TOML config file")
    serve.add_argument("--listen", help="HOST:PORT to listen on ([server] listen)")
    serve.add_argument("--zstack-url", help="ZStack API base URL incl. /zstack ([zstack] url)")
    serve.add_argument("--token-file", help="websockify TokenFile file or directory")
    demo = commands.add_parser("demo", help="run a self-contained demo (no ZStack needed)")
    demo.add_argument("--listen", default="127.0.0.1:6080", help="HOST:PORT (default %(default)s)")
    return parser


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    flags = {
        "listen": "server.listen",
        "zstack_url": "zstack.url",
        "token_file": "tickets.token_file",
    }
    return {key: getattr(args, name) for name, key in flags.items() if getattr(args, name, None)}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    install_uvloop()
    tune_malloc()
    try:
        if args.command == "demo":
            from proxy.demo.run import run_demo

            return run_demo(args.listen)
        config = load_config(args.config, os.environ, overrides_from(args))
        # Files named by the config (TLS certificates, ...) are read at start: still its errors.
        serve(config)
    except ConfigError as exc:
        print(f"console-proxy: {exc}", file=sys.stderr)
        return 2
    return 0


def serve(config: Config) -> None:
    asyncio.run(run_server(config))


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


if __name__ == "__main__":
    sys.exit(main())

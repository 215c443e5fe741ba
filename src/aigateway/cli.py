"""The ``aigateway`` command: serve, check, keys new, version."""

from __future__ import annotations

import argparse
import gc
import os
import secrets
import sys
from collections.abc import Sequence

from aigateway import __version__
from aigateway.config.load import LoadedConfig, load_config
from aigateway.config.model import compile_name_pattern
from aigateway.config.support import unenforced
from aigateway.errors import ConfigError
from aigateway.keys import digest, new_key


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(args.func(args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aigateway", description="A config-file-driven gateway for LLM APIs."
    )
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="serve the gateway")
    serve.add_argument("--config", "-c", default="gateway.yaml", help="path to gateway.yaml")
    serve.add_argument("--host", help="listen address (overrides server.host)")
    serve.add_argument("--port", type=int, help="listen port (overrides server.port)")
    serve.add_argument(
        "--no-watch",
        action="store_true",
        help="do not reload when the file changes (SIGHUP and /admin/reload still do)",
    )
    serve.set_defaults(func=_serve)

    check = sub.add_parser("check", help="validate a config file; exit 1 if it is invalid")
    check.add_argument("path", nargs="?", default="gateway.yaml")
    check.set_defaults(func=_check)

    keys = sub.add_parser("keys", help="gateway keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    new = keys_sub.add_parser("new", help="print a new key once, and its YAML entry")
    new.add_argument("--project", required=True)
    new.add_argument("--id", help="key id (default: <project>-<random>)")
    new.set_defaults(func=_keys_new)

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=lambda _args: print(f"aigateway {__version__}") or 0)
    return parser


def _load(path: str) -> LoadedConfig | None:
    try:
        return load_config(path, os.environ)
    except ConfigError as exc:
        print(f"{path}: invalid configuration", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


def _check(args: argparse.Namespace) -> int:
    loaded = _load(args.path)
    if loaded is None:
        return 1
    cfg = loaded.config
    print(
        f"{args.path}: ok (sha256 {loaded.sha256[:12]}): {len(cfg.providers)} providers, "
        f"{len(cfg.models)} models, {len(cfg.projects)} projects, {len(cfg.keys)} keys"
    )
    for warning in unenforced(cfg):
        print(f"  warning: {warning}")
    return 0


def _keys_new(args: argparse.Namespace) -> int:
    names = compile_name_pattern()
    key_id = args.id or f"{args.project}-{secrets.token_hex(3)}"
    for label, value in (("--project", args.project), ("--id", key_id)):
        if not names.match(value):
            print(f"{label}: letters, digits and . _ : / @ + - only", file=sys.stderr)
            return 2
    key = new_key()
    print(f"key (shown once; give it to the client, the gateway keeps only its digest):\n{key}\n")
    print("add under keys: in gateway.yaml:")
    print(f'  - {{id: {key_id}, project: {args.project}, sha256: "{digest(key)}"}}')
    return 0


def _serve(args: argparse.Namespace) -> int:
    loaded = _load(args.config)
    if loaded is None:
        return 1
    import asyncio

    from aigateway.app import create_app
    from aigateway.observability import configure_logging, get_logger
    from aigateway.serve import serve

    server = loaded.config.server
    access_log = configure_logging(fmt=server.log_format, level=server.log_level)
    log = get_logger("aigateway")
    for warning in unenforced(loaded.config):
        log.warning("config feature not enforced", detail=warning)
    host = args.host or server.host
    port = server.port if args.port is None else args.port
    log.info(
        "starting",
        version=__version__,
        config=args.config,
        config_sha256=loaded.sha256,
    )
    app = create_app(
        loaded, access_log=access_log, config_path=args.config, watch=not args.no_watch
    )
    # Everything loaded so far lives as long as the process: take it out of the cyclic
    # GC's sight, so collections scan only what requests allocate (measured: +10-20%
    # throughput at 256 connections).
    gc.collect()
    gc.freeze()
    try:
        asyncio.run(
            serve(
                app,
                host,
                port,
                grace_s=server.shutdown_grace_s,
                keepalive_timeout_s=server.keepalive_timeout_s,
                logger=log,
            )
        )
    except OSError as exc:
        log.error("cannot listen", host=host, port=port, error=exc.strerror or str(exc))
        access_log.sink.drain()
        return 1
    log.info("stopped")
    access_log.sink.drain()
    return 0

"""The ``aigateway`` command: serve, check, keys new, models, log, version."""

from __future__ import annotations

import argparse
import gc
import os
import secrets
import sys
from collections.abc import Sequence

from aigateway import __version__, cli_log, guard
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

    models = sub.add_parser(
        "models", help="list the routes with their targets, context windows and prices"
    )
    models.add_argument("--config", "-c", default="gateway.yaml", help="path to gateway.yaml")
    models.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    models.set_defaults(func=_models)

    cli_log.add_parser(sub)

    guard = sub.add_parser("guardrails", help="guardrails")
    guard_sub = guard.add_subparsers(dest="guard_command", required=True)
    test = guard_sub.add_parser("test", help="show what a text would trigger")
    test.add_argument("text", help="the text, or - to read standard input")
    test.add_argument("--config", "-c", default="gateway.yaml", help="path to gateway.yaml")
    test.add_argument("--project")
    test.add_argument("--key", help="a key id")
    test.add_argument("--route", help="a route (model name)")
    test.set_defaults(func=_guardrails_test)

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
    from aigateway.pricing import PriceTables, price_problems

    loaded = _load(args.path)
    if loaded is None:
        return 1
    cfg = loaded.config
    problems = price_problems(cfg, PriceTables())
    if problems:
        print(f"{args.path}: invalid configuration", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(
        f"{args.path}: ok (sha256 {loaded.sha256[:12]}): {len(cfg.providers)} providers, "
        f"{len(cfg.models)} models, {len(cfg.projects)} projects, {len(cfg.keys)} keys"
    )
    for warning in unenforced(cfg):
        print(f"  warning: {warning}")
    return 0


def _models(args: argparse.Namespace) -> int:
    import json
    import time

    from aigateway.pricing import PriceBook, provider_source

    loaded = _load(args.config)
    if loaded is None:
        return 1
    cfg = loaded.config
    prices = PriceBook(cfg.pricing, clock=time.monotonic, on_unpriced=lambda p, m: None)
    rows = []
    for name, route in cfg.models.items():
        for target in route.targets:
            source = provider_source(cfg.providers[target.provider])
            rates = (
                None if target.model == "*" else prices.rates(target.provider, source, target.model)
            )
            rows.append(
                {
                    "route": name,
                    "strategy": route.strategy,
                    "provider": target.provider,
                    "model": target.model,
                    "context_window": target.context_window,
                    "input_per_mtok": None if rates is None else str(rates.input),
                    "output_per_mtok": None if rates is None else str(rates.output),
                    "cached_input_per_mtok": None if rates is None else str(rates.cache_read),
                    "per_request_usd": None if rates is None else str(rates.request),
                    # prompts over `above` tokens are billed at these rates instead
                    "tiers": []
                    if rates is None
                    else [
                        {
                            "above": above,
                            "input_per_mtok": str(r.input),
                            "output_per_mtok": str(r.output),
                            "cached_input_per_mtok": str(r.cache_read),
                        }
                        for above, r in rates.tiers
                    ],
                    "priced": rates is not None,
                }
            )
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    header = ("ROUTE", "STRATEGY", "TARGET", "CONTEXT", "IN $/MTOK", "OUT $/MTOK", "CACHED $/MTOK")
    table: list[tuple[str, ...]] = [header]
    for item in rows:
        if item["model"] == "*":
            price: tuple[object, ...] = ("per model", "-", "-")
        elif item["priced"]:
            # "+": longer prompts cost more (see --json for the tiers)
            mark = "+" if item["tiers"] else ""
            price = tuple(
                f"{item[k]}{mark}"
                for k in ("input_per_mtok", "output_per_mtok", "cached_input_per_mtok")
            )
        else:
            price = ("unpriced", "-", "-")
        cells = (
            str(item["route"]),
            str(item["strategy"]),
            f"{item['provider']}/{item['model']}",
            str(item["context_window"] or "-"),
        )
        table.append((*cells, *(str(p) for p in price)))
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    return 0


def _guardrails_test(args: argparse.Namespace) -> int:
    loaded = _load(args.config)
    if loaded is None:
        return 1
    text = sys.stdin.read() if args.text == "-" else args.text
    try:
        result = guard.try_text(
            loaded.config, text, project=args.project, key=args.key, route=args.route
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for hit in result["hits"]:  # type: ignore[attr-defined]
        print(f"{hit['rule']}: {hit['action']}")
    if result["blocked"]:
        print(f"blocked by '{result['blocked']}'")
        return 1
    if not result["hits"]:
        print("no guardrail triggered")
    print(f"sent on as: {result['text']}")
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
    from aigateway.memory import free_closed_connections, limit_arenas

    limit_arenas()  # before any thread starts
    free_closed_connections()
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
    # Young collections walk every live object of the requests in flight, and
    # requests leave no cyclic garbage on the common path (measured: none in 2 s of
    # load), nor do closed connections (free_closed_connections, above), so they
    # are almost pure cost. At 256 connections a 10,000 threshold
    # still meant ~20 collections a second of ~2.5 ms each (6% of the CPU in a soak
    # mixing JSON, SSE, failover and cache hits); 50,000 cuts that to 1.4% for
    # +10 MiB of RSS, flat over the soak. Rarer older collections (20,000, 20, 100)
    # let RSS creep up, so those stay at 10.
    gc.set_threshold(50_000, 10, 10)
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

"""``aigateway log ...``: stats, tail, show, export and verify over prompt logs.

Every command takes one or more ``--log`` paths (a replica's log each; rotated
files next to a path are included), or ``--config`` to use ``prompt_log.path``.

The commands import ``logread`` (and with it sqlite3) themselves: every other
command, ``aigateway serve`` above all, builds this module's parser and goes
without them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from aigateway.config.load import load_config
from aigateway.errors import ConfigError
from aigateway.ledger import DIMENSIONS
from aigateway.promptlog import log_files


def add_parser(sub: Any) -> None:
    log = sub.add_parser("log", help="query the prompt log: stats, tail, show, export, verify")
    cmds = log.add_subparsers(dest="log_command", required=True)

    def files(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--log",
            action="append",
            default=[],
            metavar="PATH",
            help="a prompt log (repeat for several replicas); default: prompt_log.path",
        )
        p.add_argument("--config", "-c", default="gateway.yaml", help="path to gateway.yaml")

    def window(p: argparse.ArgumentParser) -> None:
        p.add_argument("--since", help="ISO time (UTC if no zone) or e.g. 24h, 7d")
        p.add_argument("--until", help="ISO time (UTC if no zone) or e.g. 1h (ago)")

    stats = cmds.add_parser("stats", help="totals, breakdowns and series")
    files(stats)
    window(stats)
    stats.add_argument(
        "--by",
        action="append",
        help=f"breakdown: {', '.join(DIMENSIONS)} or label:NAME (repeatable; default: all columns)",
    )
    stats.add_argument("--series", choices=["day", "hour"], help="a time series too")
    stats.add_argument("--json", action="store_true", help="one JSON object")
    stats.set_defaults(func=_stats)

    tail = cmds.add_parser("tail", help="the latest rows (and new ones with --follow)")
    files(tail)
    tail.add_argument("-n", type=int, default=10, help="rows to show first (default 10)")
    tail.add_argument("--follow", "-f", action="store_true", help="keep printing new rows")
    tail.add_argument("--project")
    tail.add_argument("--key", dest="key_id")
    tail.add_argument("--route")
    tail.set_defaults(func=_tail)

    show = cmds.add_parser("show", help="every field of one request")
    files(show)
    show.add_argument("request_id")
    show.set_defaults(func=_show)

    export = cmds.add_parser("export", help="rows as JSON lines (ClickHouse, BigQuery, pandas)")
    files(export)
    window(export)
    export.add_argument("--no-bodies", action="store_true", help="leave the bodies out")
    export.set_defaults(func=_export)

    verify = cmds.add_parser("verify", help="check the hash chain and SQLite integrity")
    files(verify)
    verify.add_argument(
        "--anchor", type=Path, help="an anchor file (<log>.anchor, copied elsewhere)"
    )
    verify.set_defaults(func=_verify)


def _paths(args: argparse.Namespace) -> list[list[Path]] | None:
    """One list of files (oldest first) per log."""
    given = [Path(p) for p in args.log]
    if not given:
        try:
            config = load_config(Path(args.config), {}).config
        except ConfigError as exc:
            print(f"{exc}\n(pass --log PATH to read a log without a config)", file=sys.stderr)
            return None
        if config.prompt_log is None:
            print(f"{args.config}: no prompt_log configured; pass --log PATH", file=sys.stderr)
            return None
        given = [Path(config.prompt_log.path)]
    out = []
    for path in given:
        found = log_files(path)
        if not found:
            print(f"{path}: no such prompt log", file=sys.stderr)
            return None
        out.append(found)
    return out


def _time(text: str | None) -> float | None:
    from aigateway import logread

    return logread.parse_when(text, time.time())


def _rows(args: argparse.Namespace, logs: list[list[Path]], **kw: Any) -> Any:
    from aigateway import logread

    since, until = _time(getattr(args, "since", None)), _time(getattr(args, "until", None))
    for files in logs:
        yield from logread.rows(files, since=since, until=until, **kw)


def _stats(args: argparse.Namespace) -> int:
    from aigateway import logread

    logs = _paths(args)
    if logs is None:
        return 1
    result = logread.stats(_rows(args, logs), by=args.by or DIMENSIONS, series=args.series)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    _print_table("total", {"all": result["total"]})
    for dim, groups in result["by"].items():
        _print_table(f"by {dim}", groups)
    if result["series"]:
        _print_table(f"per {args.series}", result["series"])
    return 0


def _print_table(title: str, groups: dict[str, dict[str, Any]]) -> None:
    print(f"\n{title}")
    head = (
        f"{'':24} {'requests':>9} {'errors':>7} {'in tok':>10} {'out tok':>10} {'cost $':>12}"
        f" {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}"
    )
    print(head)
    for name, s in groups.items():
        lat = s["latency_ms"]
        print(
            f"{name[:24]:24} {s['requests']:>9} {s['errors']:>7} {s['input_tokens']:>10}"
            f" {s['output_tokens']:>10} {s['cost_usd']:>12.6f} {_ms(lat['p50'])}"
            f" {_ms(lat['p95'])} {_ms(lat['max'])}"
        )


def _ms(value: float | None) -> str:
    return f"{value:>8.1f}" if value is not None else f"{'-':>8}"


def _line(row: dict[str, Any]) -> str:
    cost = row["cost_usd"] if row["cost_usd"] is not None else "-"
    return (
        f"{row['ts']} {row['request_id']} {row['status']} {row['project'] or '-'}/"
        f"{row['key_id'] or '-'} {row['route'] or '-'} -> {row['provider'] or '-'}/"
        f"{row['served_model'] or '-'} in={row['prompt_tokens']} out={row['completion_tokens']}"
        f" ${cost} {row['latency_ms']:.0f}ms"
    )


def _tail(args: argparse.Namespace) -> int:
    from aigateway import logread

    logs = _paths(args)
    if logs is None:
        return 1
    where = {k: v for k in ("project", "key_id", "route") if (v := getattr(args, k))}
    last: dict[Path, int] = {}
    for files in logs:
        recent = list(logread.rows(files[-1:], where=where))[-args.n :] if args.n else []
        for row in recent:
            print(_line(row))
        last[files[-1]] = _max_seq(files[-1])
    deadline = None if args.follow else 0.0
    while deadline is None:
        time.sleep(0.5)
        for files in logs:
            current = files[-1]  # the live file (rotation keeps its name; seq goes on)
            for row in logread.rows([current], where=where, after_seq=last):
                print(_line(row), flush=True)
                last[current] = row["seq"]
    return 0


def _max_seq(path: Path) -> int:
    from aigateway import logread

    with logread.connect(path) as db:
        return int(db.execute("SELECT coalesce(max(seq), 0) FROM requests").fetchone()[0])


def _show(args: argparse.Namespace) -> int:
    from aigateway import logread

    logs = _paths(args)
    if logs is None:
        return 1
    found = False
    for files in logs:
        for row in logread.rows(files, where={"request_id": args.request_id}):
            found = True
            for name in ("attempts", "labels"):
                row[name] = json.loads(row[name])
            print(json.dumps(row, indent=2, ensure_ascii=False))
    if not found:
        print(f"no request {args.request_id!r} in the log", file=sys.stderr)
        return 1
    return 0


def _export(args: argparse.Namespace) -> int:
    logs = _paths(args)
    if logs is None:
        return 1
    out = sys.stdout
    for row in _rows(args, logs):
        if args.no_bodies:
            row.pop("request_body", None)
            row.pop("response_body", None)
        out.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from aigateway import logread

    logs = _paths(args)
    if logs is None:
        return 1
    anchor = logread.read_anchor(args.anchor) if args.anchor else None
    bad = 0
    for files in logs:
        verdict = logread.verify(files, anchor if len(logs) == 1 else None)
        name = str(files[-1])
        if verdict.ok:
            print(
                f"{name}: ok, {verdict.rows} rows, last seq {verdict.last_seq} {verdict.last_hash}"
            )
        else:
            bad += 1
            print(f"{name}: TAMPERED or damaged: {verdict.problem}")
    return 1 if bad else 0

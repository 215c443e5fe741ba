"""Reading prompt logs: rows, chain verification, usage statistics, spend.

Files are opened read-only (never written by readers) and may come from several
replicas: rows are read file by file, in sequence order within each file.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aigateway import ledger
from aigateway.ledger import DIMENSIONS


def connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    return db


def rows(
    paths: Sequence[Path],
    *,
    since: float | None = None,
    until: float | None = None,
    where: dict[str, str] | None = None,
    after_seq: dict[Path, int] | None = None,
) -> Iterator[dict[str, Any]]:
    """Rows of every file, oldest file first, filtered by time and column values."""
    for path in paths:
        clauses: list[str] = []
        params: list[Any] = []
        if since is not None:
            clauses.append("ts_unix >= ?")
            params.append(since)
        if until is not None:
            clauses.append("ts_unix < ?")
            params.append(until)
        if after_seq and path in after_seq:
            clauses.append("seq > ?")
            params.append(after_seq[path])
        for column, value in (where or {}).items():
            if column not in ledger.NAMES:
                raise ValueError(f"unknown column {column!r}")
            clauses.append(f"{column} = ?")
            params.append(value)
        sql = "SELECT * FROM requests"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        with connect(path) as db:
            for row in db.execute(sql + " ORDER BY seq", params):
                yield {**dict(row), "file": str(path)}


def parse_when(text: str | None, now: float) -> float | None:
    """An ISO time (UTC when it has no zone) or a duration ago ("30m", "24h", "7d")."""
    if not text:
        return None
    units = {"m": 60, "h": 3600, "d": 86400}
    if text[-1] in units and text[:-1].replace(".", "", 1).isdigit():
        return now - float(text[:-1]) * units[text[-1]]
    at = datetime.fromisoformat(text)
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


# --- verification ----------------------------------------------------------------------


@dataclass
class Verdict:
    ok: bool
    rows: int = 0
    problem: str | None = None
    last_seq: int = 0
    last_hash: str = ledger.GENESIS


def verify(paths: Sequence[Path], anchor: tuple[int, str] | None = None) -> Verdict:
    """Check SQLite integrity and the hash chain across ``paths`` (one log's files,
    oldest first); with ``anchor`` (seq, hash) also that the log reaches it."""
    seq, prev, count = 0, ledger.GENESIS, 0
    anchor_seen = anchor is None
    for path in paths:
        with connect(path) as db:
            check = db.execute("PRAGMA integrity_check").fetchone()[0]
            if check != "ok":
                return Verdict(False, count, f"{path}: SQLite integrity check: {check}", seq, prev)
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            start_seq = int(meta.get("chain_starts_after_seq", "0"))
            start_hash = meta.get("chain_starts_after_hash", ledger.GENESIS)
            if count == 0 and seq == 0:
                seq, prev = start_seq, start_hash  # a log whose older files are gone
            elif (start_seq, start_hash) != (seq, prev):
                return Verdict(
                    False,
                    count,
                    f"{path}: starts after seq {start_seq}, but the previous file ends at {seq}",
                    seq,
                    prev,
                )
            for row in db.execute("SELECT * FROM requests ORDER BY seq"):
                data = dict(row)
                where = f"{path}: row seq {data['seq']} (request {data['request_id']})"
                if data["seq"] != seq + 1:
                    return Verdict(
                        False, count, f"{where}: expected seq {seq + 1} (rows missing or added)"
                    )
                if data["prev_hash"] != prev:
                    return Verdict(
                        False, count, f"{where}: does not follow the previous row", seq, prev
                    )
                if ledger.row_hash(data["seq"], prev, data) != data["hash"]:
                    return Verdict(False, count, f"{where}: content does not match its hash")
                seq, prev, count = data["seq"], data["hash"], count + 1
                if anchor is not None and seq == anchor[0]:
                    if prev != anchor[1]:
                        return Verdict(False, count, f"{where}: differs from the anchor")
                    anchor_seen = True
    if not anchor_seen:
        assert anchor is not None
        return Verdict(
            False,
            count,
            f"the log ends at seq {seq}, before the anchor's seq {anchor[0]}: rows were cut off",
            seq,
            prev,
        )
    return Verdict(True, count, None, seq, prev)


def read_anchor(path: Path) -> tuple[int, str]:
    seq, digest = path.read_text().split()
    return int(seq), digest


# --- statistics ------------------------------------------------------------------------


@dataclass
class _Acc:
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_nano: int = 0
    latencies: list[float] = field(default_factory=list)

    def add(self, row: dict[str, Any]) -> None:
        self.requests += 1
        if row["status"] >= 400:
            self.errors += 1
        self.input_tokens += row["prompt_tokens"] or 0
        self.output_tokens += row["completion_tokens"] or 0
        self.cost_nano += row["cost_nano"] or 0
        self.latencies.append(row["latency_ms"])

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        n = self.requests
        return {
            "requests": n,
            "errors": self.errors,
            "error_rate": self.errors / n if n else 0.0,
            "success_rate": (n - self.errors) / n if n else 0.0,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_nano / 1e9,
            "latency_ms": {
                "min": lat[0] if lat else None,
                "avg": sum(lat) / n if n else None,
                "p50": _percentile(lat, 0.50),
                "p95": _percentile(lat, 0.95),
                "max": lat[-1] if lat else None,
            },
        }


def _percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted values."""
    if not values:
        return None
    return values[max(0, math.ceil(q * len(values)) - 1)]


def stats(
    source: Iterable[dict[str, Any]],
    *,
    by: Sequence[str] = DIMENSIONS,
    series: str | None = None,
) -> dict[str, Any]:
    """Totals, a breakdown per dimension, and a per-day or per-hour series.

    Costs are summed as nano-dollars (exact), reported in dollars."""
    total = _Acc()
    groups: dict[str, dict[str, _Acc]] = {dim: defaultdict(_Acc) for dim in by}
    buckets: dict[str, _Acc] = defaultdict(_Acc)
    step = {"day": "%Y-%m-%d", "hour": "%Y-%m-%dT%H:00"}.get(series or "")
    for row in source:
        total.add(row)
        labels: dict[str, dict[str, str]] | None = None
        for dim in by:
            if dim.startswith("label:"):
                if labels is None:
                    labels = json.loads(row["labels"] or "{}")
                name = dim[6:]
                value = (labels.get("key") or {}).get(name) or (labels.get("project") or {}).get(
                    name
                )
            else:
                value = row.get(dim)
            groups[dim][str(value) if value is not None else "-"].add(row)
        if step:
            at = datetime.fromtimestamp(row["ts_unix"], UTC).strftime(step)
            buckets[at].add(row)
    return {
        "total": total.summary(),
        "by": {
            dim: {k: v.summary() for k, v in sorted(found.items())} for dim, found in groups.items()
        },
        "series": {k: v.summary() for k, v in sorted(buckets.items())} if step else {},
    }


# --- spend, for rebuilding budgets -----------------------------------------------------


def spend_since(paths: Sequence[Path], since: float) -> dict[tuple[str, str], tuple[int, int]]:
    """(scope kind "k"/"p", key id or project) → (nano-USD, tokens) since ``since``."""
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for path in paths:
        with connect(path) as db:
            for kind, column in (("k", "key_id"), ("p", "project")):
                query = (  # column: one of two constants above
                    f"SELECT {column}, coalesce(sum(cost_nano), 0), "  # noqa: S608
                    "coalesce(sum(coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0)), 0) "
                    f"FROM requests WHERE ts_unix >= ? AND {column} IS NOT NULL GROUP BY {column}"
                )
                for name, nano, tokens in db.execute(query, (since,)):
                    before = out.get((kind, name), (0, 0))
                    out[(kind, name)] = (before[0] + nano, before[1] + tokens)
    return out

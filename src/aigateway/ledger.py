"""The prompt log's row format, schema and hash chain (pure: no I/O).

Every row carries ``prev_hash`` (the previous row's ``hash``, across rotated
files too) and ``hash = sha256(prev_hash + canonical JSON of the row)``. Editing,
deleting, inserting or reordering rows breaks the chain at the first changed
row; cutting rows off the end is caught against an anchor (the last sequence
number and hash) kept outside the file. SQLite triggers refuse UPDATE and
DELETE, so the gateway itself can only append.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from aigateway.jsonc import dumps

FORMAT = 1
#: the chain's start: the first row of the first file follows this
GENESIS = "0" * 64

#: (name, SQL type) in hash order; ``seq``, ``prev_hash`` and ``hash`` come first/last
COLUMNS: tuple[tuple[str, str], ...] = (
    ("ts", "TEXT NOT NULL"),  # ISO 8601 UTC, when the request ended
    ("ts_unix", "REAL NOT NULL"),
    ("request_id", "TEXT NOT NULL"),
    ("endpoint", "TEXT NOT NULL"),
    ("key_id", "TEXT"),
    ("project", "TEXT"),
    ("route", "TEXT"),
    ("requested_model", "TEXT"),
    ("served_model", "TEXT"),
    ("provider", "TEXT"),
    ("status", "INTEGER NOT NULL"),
    ("error_class", "TEXT"),
    ("attempts", "TEXT NOT NULL"),  # JSON: [{provider, model, status, error, latency_ms}]
    ("stream", "INTEGER NOT NULL"),
    ("cache_hit", "INTEGER NOT NULL"),
    ("prompt_tokens", "INTEGER"),
    ("completion_tokens", "INTEGER"),
    ("uncached_input_tokens", "INTEGER"),
    ("cached_tokens", "INTEGER"),
    ("cache_write_tokens", "INTEGER"),
    ("reasoning_tokens", "INTEGER"),
    ("usage_source", "TEXT"),  # provider | estimated
    ("cost_usd", "TEXT"),  # exact decimal text; NULL when unpriced
    ("cost_nano", "INTEGER"),  # what budgets counted (nano-USD, rounded up)
    ("latency_ms", "REAL NOT NULL"),
    ("ttfb_ms", "REAL"),
    ("overhead_ms", "REAL NOT NULL"),
    ("labels", "TEXT NOT NULL"),  # JSON: the key's and project's labels
    ("guardrails", "TEXT"),  # JSON: ["request:card:redact", ...]; never the matched text
    ("request_body", "TEXT"),  # redacted; NULL with prompt_log mode metadata
    ("response_body", "TEXT"),
)
NAMES: tuple[str, ...] = tuple(name for name, _ in COLUMNS)
#: the columns usage statistics break down by (``aigateway log stats --by``,
#: ``/admin/usage``); ``label:<name>`` breaks down by a config label
DIMENSIONS = ("project", "key_id", "route", "served_model", "provider")

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
  seq INTEGER PRIMARY KEY,
  {", ".join(f"{name} {kind}" for name, kind in COLUMNS)},
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts_unix);
CREATE INDEX IF NOT EXISTS requests_request_id ON requests (request_id);
CREATE TRIGGER IF NOT EXISTS requests_no_update BEFORE UPDATE ON requests
  BEGIN SELECT RAISE(ABORT, 'the prompt log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS requests_no_delete BEFORE DELETE ON requests
  BEGIN SELECT RAISE(ABORT, 'the prompt log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS meta_no_update BEFORE UPDATE ON meta
  BEGIN SELECT RAISE(ABORT, 'the prompt log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS meta_no_delete BEFORE DELETE ON meta
  BEGIN SELECT RAISE(ABORT, 'the prompt log is append-only'); END;
"""

#: SQLite's default cap on parameters per statement (3.32+)
MAX_PARAMS = 32766
#: rows one INSERT statement can carry
MAX_ROWS_PER_INSERT = MAX_PARAMS // (len(NAMES) + 3)
_ROW_SLOTS = f"({', '.join('?' * (len(NAMES) + 3))})"


def insert_sql(rows: int) -> str:
    """One INSERT of ``rows`` rows: in autocommit mode, one statement is one
    transaction (one round trip to the writer thread, one commit)."""
    # column names are this module's constants, never input
    return (
        f"INSERT INTO requests (seq, {', '.join(NAMES)}, prev_hash, hash) "  # noqa: S608
        f"VALUES {', '.join([_ROW_SLOTS] * rows)}"
    )


def row_hash(seq: int, prev_hash: str, row: Mapping[str, Any]) -> str:
    """The chained hash of one row (``row`` holds every name in ``NAMES``)."""
    # json.dumps(..., ensure_ascii=False, separators=(",", ":")), byte for byte
    canonical = dumps([seq, prev_hash, *[row[name] for name in NAMES]])
    return hashlib.sha256(canonical.encode()).hexdigest()


def chain(
    rows: Sequence[Mapping[str, Any]], last_seq: int, last_hash: str
) -> list[tuple[Any, ...]]:
    """Rows as INSERT parameters, numbered and chained after ``(last_seq, last_hash)``."""
    out = []
    prev = last_hash
    for i, row in enumerate(rows, start=last_seq + 1):
        digest = row_hash(i, prev, row)
        out.append((i, *[row[name] for name in NAMES], prev, digest))
        prev = digest
    return out

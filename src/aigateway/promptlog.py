"""The append-only SQLite prompt log: one writer, group commit, WAL.

``submit(row)`` queues a row and returns a future that resolves once the row is
committed (True) or could not be written (False). With durability ``strict`` the
caller awaits it before the response's last byte; with ``async`` it does not,
and the queue is bounded (``queue_size``): rows beyond are dropped and counted.

One task writes: it takes every row waiting, numbers and chains them
(``ledger.chain``) and inserts them with one statement (one implicit
transaction, one trip to aiosqlite's thread), so one commit serves many
requests. WAL with ``synchronous=NORMAL`` survives the process being killed;
``fsync: true`` (``synchronous=FULL``) survives power loss too.

When the disk is full or the file cannot be written, requests keep being served:
the failure is logged and counted, the rows are kept (up to ``queue_size``) and
written when writing works again.

Rotation: past ``rotate_mb`` or ``rotate_days`` the file is renamed to
``<stem>-<first seq>.sqlite``, made read-only, and a new file continues the
chain. ``close()`` writes everything still queued.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from aigateway import ledger
from aigateway.config.model import PromptLogConfig
from aigateway.metrics import Metrics

if TYPE_CHECKING:
    import aiosqlite

# sqlite3 and aiosqlite (~1.4 MiB of RSS with their modules and libsqlite3) are
# imported when a log is opened or read: every gateway imports this module, and
# only those with a prompt_log need them.

RETRY_S = 1.0
#: at most this many rows per transaction (one INSERT statement)
BATCH_MAX = ledger.MAX_ROWS_PER_INSERT
#: the anchor file (last seq and hash) is rewritten at most this often
ANCHOR_EVERY_S = 1.0

log = structlog.get_logger("aigateway.prompt_log")


def rotated_name(path: Path, first_seq: int) -> Path:
    return path.with_name(f"{path.stem}-{first_seq:012d}{path.suffix}")


def log_files(path: Path) -> list[Path]:
    """Every file of a log, oldest first: the rotated ones, then the current one."""
    rotated = sorted(path.parent.glob(f"{path.stem}-[0-9]*{path.suffix}"))
    return [*rotated, path] if path.exists() else rotated


class PromptLog:
    def __init__(
        self, config: PromptLogConfig, metrics: Metrics, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._config = config
        self._path = Path(config.path)
        self._metrics = metrics
        self._clock = clock
        self._db: aiosqlite.Connection | None = None
        self._queue: deque[tuple[dict[str, Any], asyncio.Future[bool] | None]] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._writer: asyncio.Task[None] | None = None
        self._last_seq = 0
        self._last_hash = ledger.GENESIS
        self._opened_at = 0.0
        self._anchor_at = 0.0
        self._failing = False

    @property
    def path(self) -> Path:
        return self._path

    @property
    def strict(self) -> bool:
        return self._config.durability == "strict"

    async def open(self, start: Callable[[str, Any], Any]) -> None:
        """Open (or create) the file and start the writer with ``start(name, coro)``."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        await self._open_file()
        self._writer = start("prompt-log-writer", self._write_loop())

    async def _open_file(self) -> None:
        if self._last_seq == 0:  # first open: continue the chain of older files
            for older in reversed(log_files(self._path)):
                found = await asyncio.to_thread(_last_row, older)
                if found is not None:
                    self._last_seq, self._last_hash = found
                    break
        import aiosqlite

        db = await aiosqlite.connect(self._path, isolation_level=None)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute(f"PRAGMA synchronous={'FULL' if self._config.fsync else 'NORMAL'}")
        await db.executescript(ledger.SCHEMA)
        await db.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('format', ?), ('created', ?), "
            "('chain_starts_after_seq', ?), ('chain_starts_after_hash', ?)",
            (str(ledger.FORMAT), str(self._clock()), str(self._last_seq), self._last_hash),
        )
        self._db = db
        async with db.execute("SELECT value FROM meta WHERE key = 'created'") as cur:
            row = await cur.fetchone()
        self._opened_at = float(row[0]) if row else self._clock()

    def submit(self, row: dict[str, Any]) -> asyncio.Future[bool] | None:
        """Queue a row. Strict: a future for its commit. Async: None (fire and forget)."""
        if self._closing and self._writer is None:
            self._metrics.prompt_log_dropped.inc(("closed",))
            return None
        if not self.strict and len(self._queue) >= self._config.queue_size:
            self._metrics.prompt_log_dropped.inc(("queue_full",))
            return None
        future: asyncio.Future[bool] | None = None
        if self.strict:
            future = asyncio.get_running_loop().create_future()
        self._queue.append((row, future))
        self._metrics.prompt_log_queue.value = len(self._queue)
        self._wake.set()
        return future

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                if not await self._write_batch():
                    if self._closing:  # shutting down and still unable to write
                        self._metrics.prompt_log_dropped.inc(("closed",), len(self._queue))
                        log.error("prompt_log_rows_lost_at_shutdown", rows=len(self._queue))
                        self._queue.clear()
                        return
                    await asyncio.sleep(RETRY_S)  # disk full, file gone: try again soon
            if self._closing:
                return

    async def _write_batch(self) -> bool:
        import sqlite3  # loaded by _open_file already: a dict lookup

        batch = [self._queue[i] for i in range(min(len(self._queue), BATCH_MAX))]
        params = ledger.chain([row for row, _ in batch], self._last_seq, self._last_hash)
        db = self._db
        try:
            if db is None:
                await self._open_file()
                db = self._db
                assert db is not None
            # one statement, one implicit transaction: all of the batch or none of it
            await db.execute(
                ledger.insert_sql(len(params)), [value for row in params for value in row]
            )
        except (sqlite3.Error, OSError) as exc:
            self._write_failed(batch, exc)
            return False
        if self._failing:
            self._failing = False
            log.warning("prompt_log_recovered", path=str(self._path))
        for _ in batch:
            self._queue.popleft()
        self._last_seq, self._last_hash = params[-1][0], params[-1][-1]
        for _, future in batch:
            if future is not None and not future.done():
                future.set_result(True)
        self._metrics.prompt_log_rows.inc((), len(batch))
        self._metrics.prompt_log_queue.value = len(self._queue)
        await self._after_commit()
        return True

    def _write_failed(self, batch: list[Any], exc: BaseException) -> None:
        self._metrics.prompt_log_errors.inc((type(exc).__name__,))
        if not self._failing:
            self._failing = True
            log.error(
                "prompt_log_write_failed; requests are served, rows are kept and retried",
                path=str(self._path),
                error=f"{type(exc).__name__}: {exc}"[:300],
                waiting=len(self._queue),
            )
        # strict callers are not held hostage by a broken disk: they go on
        for _, future in batch:
            if future is not None and not future.done():
                future.set_result(False)
        # keep what waits bounded: the oldest rows beyond queue_size are dropped
        while len(self._queue) > self._config.queue_size:
            self._queue.popleft()
            self._metrics.prompt_log_dropped.inc(("write_failed",))

    async def _after_commit(self) -> None:
        now = self._clock()
        if now - self._anchor_at >= ANCHOR_EVERY_S or self._closing:
            self._anchor_at = now
            await asyncio.to_thread(self._write_anchor)
        if self._due_for_rotation(now):
            await self._rotate()

    def _write_anchor(self) -> None:
        """``<log>.anchor``: the last seq and hash, for ``aigateway log verify --anchor``
        (copy it somewhere the log's writers cannot reach to catch truncation)."""
        anchor = self._path.with_name(self._path.name + ".anchor")
        tmp = anchor.with_name(anchor.name + ".tmp")
        tmp.write_text(f"{self._last_seq} {self._last_hash}\n")
        os.replace(tmp, anchor)

    def _due_for_rotation(self, now: float) -> bool:
        cfg = self._config
        if cfg.rotate_days is not None and now - self._opened_at >= cfg.rotate_days * 86400:
            return True
        if cfg.rotate_mb is None:
            return False
        try:
            size = self._path.stat().st_size
            wal = self._path.with_name(self._path.name + "-wal")
            size += wal.stat().st_size if wal.exists() else 0
        except OSError:
            return False
        return size >= cfg.rotate_mb * 1024 * 1024

    async def _rotate(self) -> None:
        db = self._db
        assert db is not None
        async with db.execute("SELECT min(seq) FROM requests") as cur:
            first = await cur.fetchone()
        await db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        await db.close()
        self._db = None
        target = rotated_name(self._path, int(first[0]) if first and first[0] else 0)
        await asyncio.to_thread(_retire, self._path, target)
        log.info("prompt_log_rotated", old=str(target), new=str(self._path))
        await self._open_file()

    async def close(self) -> None:
        """Write everything queued, then close the file."""
        self._closing = True
        self._wake.set()
        writer = self._writer
        if writer is not None:
            try:
                await asyncio.wait_for(asyncio.shield(writer), timeout=10)
            except TimeoutError:
                log.error("prompt_log_close_timeout", waiting=len(self._queue))
                writer.cancel()
        self._writer = None
        if self._db is not None:
            await asyncio.to_thread(self._write_anchor)
            await self._db.close()
            self._db = None


def _last_row(path: Path) -> tuple[int, str] | None:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            row = db.execute("SELECT seq, hash FROM requests ORDER BY seq DESC LIMIT 1").fetchone()
    except sqlite3.Error:
        return None
    return (int(row[0]), str(row[1])) if row else None


def _retire(path: Path, target: Path) -> None:
    os.replace(path, target)
    for suffix in ("-wal", "-shm"):
        extra = path.with_name(path.name + suffix)
        if extra.exists():
            extra.unlink()
    target.chmod(0o444)


def row_from_mapping(values: Mapping[str, Any]) -> dict[str, Any]:
    """A row with every column, absent ones as NULL."""
    return {name: values.get(name) for name in ledger.NAMES}

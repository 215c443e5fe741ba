"""Structured logs (structlog), set up once per process.

Log lines are JSON objects on stdout. Nothing here logs a key, a provider secret
or prompt text: callers pass names from the config and counts, never raw input.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from aigateway.scrub import scrub

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _scrub_event(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Last line of defence: token-shaped strings never reach the log."""
    for name in ("exception", "error", "event"):
        value = event.get(name)
        if isinstance(value, str):
            event[name] = scrub(value)
    return event


class _StdlibScrubber(logging.Filter):
    """aiohttp logs malformed requests with the offending bytes (a header may be a key).

    Keep the fact and the exception's class; drop the bytes and the traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(exc).__name__}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        record.msg = scrub(str(record.msg))
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {"event": record.getMessage(), "logger": record.name, "level": record.levelname.lower()}
        )


def _configure_stdlib(level: int, stream: Any) -> None:
    handler = logging.StreamHandler(stream)
    handler.addFilter(_StdlibScrubber())
    handler.setFormatter(_JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_aigateway", False):
            root.removeHandler(old)
    handler._aigateway = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(max(level, logging.INFO))


class LineSink:
    """Where log lines go: lines written during one event-loop turn leave in one write.

    Under load many requests finish in one turn of the loop; their access lines
    then cost one system call, not one each. Outside a running loop (start-up, the
    CLI) every line is written at once. ``drain()`` writes whatever is pending.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._pending: list[str] = []

    def write(self, text: str) -> int:
        if not self._pending:
            try:
                asyncio.get_running_loop().call_soon(self.drain)
            except RuntimeError:
                self._stream.write(text)
                self._stream.flush()
                return len(text)
        self._pending.append(text)
        return len(text)

    def flush(self) -> None:
        """File-like no-op: lines are drained once per loop turn."""

    def drain(self) -> None:
        if self._pending:
            text = "".join(self._pending)
            self._pending.clear()
            try:
                self._stream.write(text)
                self._stream.flush()
            except (OSError, ValueError):
                pass  # stdout gone (closed pipe): losing a log line must not fail a request


_quote = json.encoder.encode_basestring  # C: escapes, keeps non-ASCII
_dumps = json.JSONEncoder(ensure_ascii=False).encode
_KEYS: dict[str, str] = {}


def flat_json(fields: dict[str, Any], tail: str = "") -> str:
    """``json.dumps(fields, ensure_ascii=False)`` with ``tail`` (already JSON:
    ``"k": v, ...``) added as the last members; faster than json.dumps for the
    flat objects of the access log (strings, numbers, None)."""
    parts = []
    keys = _KEYS
    for name, value in fields.items():
        key = keys.get(name)
        if key is None:
            if type(name) is not str:  # json.dumps converts such keys; let it
                body = _dumps(fields)
                return body[:-1] + (", " if len(body) > 2 else "") + tail + "}" if tail else body
            key = _quote(name) + ": "
            if len(keys) < 1024:
                keys[name] = key
        kind = type(value)
        if kind is str:
            parts.append(key + _quote(value))
        elif value is None:
            parts.append(key + "null")
        elif kind is bool:
            parts.append(key + ("true" if value else "false"))
        elif kind is int or (kind is float and value - value == 0.0):  # a finite float
            parts.append(key + repr(value))
        else:  # nan, lists, dicts, ...: as json.dumps renders them
            parts.append(key + _dumps(value))
    if tail:
        parts.append(tail)
    return "{" + ", ".join(parts) + "}"


class AccessLog:
    """The one line per request, in the same shape as the structlog lines.

    Rendered directly rather than through structlog's processor chain: it is on
    every request's path, and its fields are fixed names from the config and counts.
    """

    def __init__(self, sink: LineSink, fmt: str = "json") -> None:
        self.sink = sink
        self._json = fmt == "json"
        self._second = -1
        self._prefix = ""

    def _stamp(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((now - second) * 1_000_000):06d}Z"

    def write(self, fields: dict[str, Any]) -> None:
        stamp = self._stamp()
        if self._json:
            line = flat_json(
                fields, '"event": "request", "level": "info", "timestamp": "' + stamp + '"'
            )
        else:
            pairs = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
            line = f"{stamp} [info     ] request {pairs}"
        self.sink.write(line + "\n")


class _LineLogger:
    """structlog's final logger: hands each rendered line to a ``LineSink``."""

    def __init__(self, sink: LineSink) -> None:
        self._sink = sink

    def msg(self, message: str) -> None:
        self._sink.write(message + "\n")

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def configure_logging(
    *, fmt: str = "json", level: str = "info", stream: TextIO | None = None
) -> AccessLog:
    """Set up structlog and stdlib logging on one sink; returns the access log on it."""
    sink = LineSink(stream or sys.stdout)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _scrub_event,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=lambda *_: _LineLogger(sink),
        cache_logger_on_first_use=False,
    )
    _configure_stdlib(_LEVELS[level], sink)
    return AccessLog(sink, fmt)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)

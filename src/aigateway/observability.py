"""Structured logs (structlog), set up once per process.

Log lines are JSON objects on stdout. Nothing here logs a key, a provider secret
or prompt text: callers pass names from the config and counts, never raw input.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any, TextIO

import structlog

from aigateway.accesslog import AccessLog, LineSink
from aigateway.scrub import scrub

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


#: the id of the request being handled: set by the HTTP handler, on every log line
#: written while it runs (and by the tasks it starts); one context variable set
#: per request, cheaper than structlog's ``bind_contextvars``
REQUEST_ID: ContextVar[str | None] = ContextVar("aigateway_request_id", default=None)


def _add_request_id(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    rid = REQUEST_ID.get()
    if rid is not None:
        event.setdefault("request_id", rid)
    return event


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
            _add_request_id,
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

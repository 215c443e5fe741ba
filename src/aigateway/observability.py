"""Structured logs (structlog) and Prometheus metrics, set up once per process.

Log lines are JSON objects on stdout. Nothing here logs a key, a provider secret
or prompt text: callers pass names from the config and counts, never raw input.
Metric labels take only values the config declares, so series stay bounded
whatever clients send.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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


def _configure_stdlib(level: int, stream: TextIO) -> None:
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


def configure_logging(
    *, fmt: str = "json", level: str = "info", stream: TextIO | None = None
) -> None:
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
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=False,
    )
    _configure_stdlib(_LEVELS[level], stream or sys.stdout)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


class Metrics:
    """The gateway's collectors, on their own registry (tests make one each)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "aigateway_requests",
            "Requests answered, by who asked, what they asked for and the status class.",
            ["project", "key", "route", "provider", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "aigateway_request_duration_seconds",
            "Wall time from request to last byte.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "aigateway_overhead_seconds",
            "Gateway time per request: wall time minus time waiting on upstreams.",
            ["route"],
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "aigateway_tokens",
            "Tokens by type as reported by the provider.",
            ["project", "route", "provider", "type"],
            registry=r,
        )
        self.attempts = Counter(
            "aigateway_upstream_attempts",
            "Calls to upstream targets by outcome.",
            ["provider", "outcome"],
            registry=r,
        )
        self.in_flight = Gauge(
            "aigateway_in_flight_requests", "Requests being handled now.", registry=r
        )
        self.config_info = Gauge(
            "aigateway_config_info",
            "The loaded configuration (value 1), labelled by its SHA-256.",
            ["sha256"],
            registry=r,
        )

"""The access log: one JSON line per request, in the shape of the structlog lines.

Rendered directly rather than through structlog's processor chain (it is on every
request's path), and written through a ``LineSink`` that batches the lines of one
event-loop turn into one write. Fields are names from the config and counts: never
a key, a secret or prompt text.
"""

from __future__ import annotations

import asyncio
import time
from typing import NamedTuple, TextIO

from aigateway.jsonc import quote


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


def _text(value: str | None) -> str:
    return "null" if value is None else quote(value)


# (int | float, not float: compiled, a float parameter would turn 12 into 12.0)
def _number(value: int | float | None) -> str:
    """What json.dumps writes for an int or a finite float (null for nan and inf)."""
    if value is None:
        return "null"
    text = repr(value)
    return text if text[-1] <= "9" else "null"  # "nan", "inf" end in letters


class RequestLine(NamedTuple):
    """The access log's fields for one request: names from the config and counts,
    never a key, a secret or prompt text."""

    request_id: str
    endpoint: str
    key_id: str | None
    project: str | None
    route: str | None
    provider: str | None
    model: str | None
    stream: bool
    status: int
    error_class: str | None
    attempts: int
    latency_ms: float
    overhead_ms: float
    ttfb_ms: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    usage_source: str | None
    cost_usd: float | None


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

    def write(self, line: RequestLine) -> None:
        self.request(*line)

    def request(
        self,
        request_id: str,
        endpoint: str,
        key_id: str | None,
        project: str | None,
        route: str | None,
        provider: str | None,
        model: str | None,
        stream: bool,
        status: int,
        error_class: str | None,
        attempts: int,
        latency_ms: float,
        overhead_ms: float,
        ttfb_ms: float | None,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        usage_source: str | None,
        cost_usd: float | None,
    ) -> None:
        """The line of one request, its fields in ``RequestLine``'s order (the
        request path passes them as they are: no tuple built per request)."""
        stamp = self._stamp()
        if self._json:  # what json.dumps (ensure_ascii=False) writes: one f-string, no dict
            text = (
                f'{{"request_id": {quote(request_id)}, "endpoint": {quote(endpoint)}, '
                f'"key_id": {_text(key_id)}, "project": {_text(project)}, '
                f'"route": {_text(route)}, "provider": {_text(provider)}, '
                f'"model": {_text(model)}, "stream": {"true" if stream else "false"}, '
                f'"status": {status!r}, "error_class": {_text(error_class)}, '
                f'"attempts": {attempts!r}, "latency_ms": {_number(latency_ms)}, '
                f'"overhead_ms": {_number(overhead_ms)}, "ttfb_ms": {_number(ttfb_ms)}, '
                f'"prompt_tokens": {_number(prompt_tokens)}, '
                f'"completion_tokens": {_number(completion_tokens)}, '
                f'"usage_source": {_text(usage_source)}, "cost_usd": {_number(cost_usd)}, '
                f'"event": "request", "level": "info", "timestamp": "{stamp}"}}'
            )
        else:
            line = RequestLine(
                request_id, endpoint, key_id, project, route, provider, model, stream, status,
                error_class, attempts, latency_ms, overhead_ms, ttfb_ms, prompt_tokens,
                completion_tokens, usage_source, cost_usd,
            )  # fmt: skip
            pairs = " ".join(f"{k}={v}" for k, v in zip(line._fields, line) if v is not None)
            text = f"{stamp} [info     ] request {pairs}"
        self.sink.write(text + "\n")

"""One prompt-log row per authenticated request, written when the request is over.

Outermost middleware: by the time it writes, ``Observe`` has the final status,
``Account`` the cost and ``Govern`` the usage. With durability ``strict`` a whole
answer is returned (and a stream's last bytes written) only after its row is
committed. Unauthenticated requests get no row (they would let anyone fill the
disk); they are counted in metrics and the access log.

Bodies, per the project's ``prompt_log`` (else ``prompt_log.mode``): ``full``
stores the request and the answer (a stream's text) redacted and cut at
``max_body_bytes``; ``metadata`` stores neither. The accounting part of the row
is always written: it is the ledger budgets are rebuilt from.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from aigateway import limits
from aigateway.config.model import GatewayConfig, PromptLogConfig
from aigateway.errors import GatewayError
from aigateway.jsonc import dumps
from aigateway.pipeline import CLIENT_CLOSED, Handler, Reply, RequestContext, StreamReply
from aigateway.promptlog import PromptLog
from aigateway.providers.base import Batch, output_text
from aigateway.redact import Redactor

Spawn = Callable[[str, Coroutine[Any, Any, Any]], object]


class Record:
    def __init__(self, log: PromptLog, config: GatewayConfig, spawn: Spawn) -> None:
        assert config.prompt_log is not None
        self._log = log
        self._settings: PromptLogConfig = config.prompt_log
        self._redact = Redactor(config.prompt_log.redact)
        self._labels = {
            key.id: json.dumps(
                {"key": key.labels, "project": _project_labels(config, key.project)},
                separators=(",", ":"),
            )
            for key in config.keys
        }
        self._spawn = spawn

    async def __call__(self, ctx: RequestContext, call_next: Handler) -> Reply:
        try:
            reply = await call_next(ctx)
        except asyncio.CancelledError:
            if ctx.key is not None:
                self._log.submit(self._row(ctx, CLIENT_CLOSED, "ClientClosed", None))
            raise
        except GatewayError as exc:
            if ctx.key is not None:
                await self._write(self._row(ctx, exc.status, exc.error_class, None))
            raise
        except BaseException as exc:
            if ctx.key is not None:
                self._log.submit(self._row(ctx, 500, type(exc).__name__, None))
            raise
        if isinstance(reply, StreamReply):
            self._stream_hooks(ctx, reply)
            return reply
        body = self._body(reply.body) if self._full(ctx) else None
        await self._write(self._row(ctx, reply.status, None, body))
        return reply

    async def _write(self, row: dict[str, Any]) -> None:
        done = self._log.submit(row)
        if done is not None:
            await done  # strict: committed (or failed and counted) before the answer leaves

    def _full(self, ctx: RequestContext) -> bool:
        mode = ctx.project.prompt_log if ctx.project is not None else None
        return (mode or self._settings.mode) == "full"

    def _stream_hooks(self, ctx: RequestContext, reply: StreamReply) -> None:
        captured: list[bytes] = []
        budget = [self._settings.max_body_bytes * 4]  # chunk JSON around the text
        pending: list[asyncio.Future[bool]] = []

        def on_batch(batch: Batch) -> None:
            for part in batch.parts:
                raw = part if isinstance(part, bytes) else part.encode()
                if budget[0] > 0:
                    captured.append(raw[: budget[0]])
                    budget[0] -= len(raw)

        def on_end(status: int, error: str | None) -> None:
            text = output_text(b"".join(captured)) if captured else ""
            body = self._cut(self._redact(text)) if self._full(ctx) else None
            done = self._log.submit(self._row(ctx, status, error, body))
            if done is not None:
                pending.append(done)

        async def before_tail() -> None:
            for done in pending:
                await done

        if self._full(ctx):
            reply.on_batch.append(on_batch)
        reply.on_end.append(on_end)
        reply.before_tail.append(before_tail)

    def _body(self, value: Any) -> str:
        return self._cut(dumps(self._redact.json(value)))

    def _cut(self, text: str) -> str:
        limit = self._settings.max_body_bytes
        data = text.encode()
        if len(data) <= limit:
            return text
        return data[:limit].decode("utf-8", "ignore") + "…[truncated]"

    def _row(
        self, ctx: RequestContext, status: int, error: str | None, response: str | None
    ) -> dict[str, Any]:
        now = time.time()
        usage = ctx.usage
        cost = ctx.cost_usd
        model = ctx.body.get("model")
        attempts = [
            {
                "provider": a.provider,
                "model": a.model,
                "status": a.status,
                "error": a.error_class,
                "latency_ms": round(a.latency_s * 1000, 2),
            }
            for a in ctx.attempts
        ]
        key_id = ctx.key.id if ctx.key is not None else None
        return {
            "ts": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
            "ts_unix": now,
            "request_id": ctx.request_id,
            "endpoint": ctx.endpoint,
            "key_id": key_id,
            "project": ctx.project_name,
            "route": ctx.route_name,
            "requested_model": model[:256] if isinstance(model, str) else None,
            "served_model": ctx.served_model,
            "provider": ctx.target.provider if ctx.target is not None else None,
            "status": status,
            "error_class": error,
            "attempts": dumps(attempts),
            "stream": int(ctx.stream),
            "cache_hit": int(ctx.cache_hit),
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "completion_tokens": usage.completion_tokens if usage else None,
            "uncached_input_tokens": usage.uncached_input_tokens if usage else None,
            "cached_tokens": usage.cached_tokens if usage else None,
            "cache_write_tokens": usage.cache_write_tokens if usage else None,
            "reasoning_tokens": usage.reasoning_tokens if usage else None,
            "usage_source": None
            if usage is None
            else ("estimated" if ctx.usage_estimated else "provider"),
            "cost_usd": None if cost is None else format(cost, "f"),
            "cost_nano": None if cost is None else limits.to_nano(cost),
            "latency_ms": round((time.perf_counter() - ctx.started) * 1000, 3),
            "ttfb_ms": None if ctx.first_byte_s is None else round(ctx.first_byte_s * 1000, 3),
            "overhead_ms": round(ctx.overhead_ms(), 3),
            "labels": self._labels.get(key_id or "", "{}"),
            "guardrails": dumps(ctx.guardrail_hits) if ctx.guardrail_hits else None,
            "request_body": self._body(ctx.body) if ctx.body and self._full(ctx) else None,
            "response_body": response,
        }


def _project_labels(config: GatewayConfig, name: str) -> dict[str, str]:
    project = config.projects.get(name)
    return dict(project.labels) if project is not None else {}

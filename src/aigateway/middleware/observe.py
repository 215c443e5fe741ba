"""One access-log line and the request metrics, when a request is really over.

For a stream that is after its last chunk (or the caller going away), so latency,
tokens and status describe the whole exchange. Labels and log fields are names
from the config and counts: never a key, a secret or prompt text.
"""

from __future__ import annotations

import asyncio
import time

from aigateway.errors import GatewayError
from aigateway.metrics import Metrics
from aigateway.observability import AccessLog
from aigateway.pipeline import CLIENT_CLOSED, Handler, Reply, RequestContext, StreamReply

_STATUS_CLASS = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}


class Observe:
    def __init__(self, metrics: Metrics, logger: AccessLog) -> None:
        self._metrics = metrics
        self._log = logger

    async def __call__(self, ctx: RequestContext, call_next: Handler) -> Reply:
        self._metrics.in_flight.value += 1
        try:
            reply = await call_next(ctx)
        except GatewayError as exc:
            self._done(ctx, exc.status, exc.error_class)
            raise
        except asyncio.CancelledError:
            self._done(ctx, CLIENT_CLOSED, "ClientClosed")
            raise
        except BaseException as exc:
            self._done(ctx, 500, type(exc).__name__)
            raise
        if isinstance(reply, StreamReply):
            reply.on_end.append(lambda status, error: self._done(ctx, status, error))
            return reply
        self._done(ctx, reply.status, None)
        return reply

    def _done(self, ctx: RequestContext, status: int, error: str | None) -> None:
        ctx.status = status
        ctx.error_class = error
        m = self._metrics
        m.in_flight.value -= 1
        wall = time.perf_counter() - ctx.started
        overhead = max(0.0, wall - ctx.upstream_s)
        project = ctx.project_name or "-"
        route = ctx.route_name or "-"
        provider = ctx.target.provider if ctx.target is not None else "-"
        key = ctx.key.id if ctx.key else "-"
        m.requests.inc((project, key, route, provider, _STATUS_CLASS[status // 100]))
        m.request_duration.observe((route,), wall)
        m.overhead.observe((route,), overhead)
        if ctx.attempts:
            genai = (ctx.endpoint, provider, route)
            m.upstream_duration.observe((route,), ctx.upstream_s)
            m.genai_duration.observe(genai, ctx.upstream_s)
            if ctx.stream and ctx.first_byte_s is not None:
                m.ttft.observe((route,), ctx.first_byte_s)
                m.genai_ttft.observe(genai, ctx.first_byte_s)
            if ctx.usage is not None:
                m.genai_tokens.observe((*genai, "input"), ctx.usage.prompt_tokens)
                m.genai_tokens.observe((*genai, "output"), ctx.usage.completion_tokens)
        usage = ctx.usage
        if usage is not None and ctx.target is not None:
            tokens = m.tokens
            tokens.inc((project, route, provider, "input"), usage.prompt_tokens)
            tokens.inc((project, route, provider, "output"), usage.completion_tokens)
            if usage.cached_tokens:
                tokens.inc((project, route, provider, "cached"), usage.cached_tokens)
            if usage.reasoning_tokens:
                tokens.inc((project, route, provider, "reasoning"), usage.reasoning_tokens)
        if ctx.usage_estimated and ctx.target is not None:
            m.estimated_usage.inc((ctx.target.provider,))
        if ctx.cost_usd is not None:
            m.cost.inc((project, route, provider), float(ctx.cost_usd))
        elif usage is not None and ctx.target is not None:
            m.unpriced.inc((provider,))
        for attempt in ctx.attempts:
            outcome = "ok" if attempt.error_class is None else attempt.error_class
            m.attempts.inc((attempt.provider, outcome))
        self._log.write(
            {
                "request_id": ctx.request_id,
                "endpoint": ctx.endpoint,
                "key_id": ctx.key.id if ctx.key else None,
                "project": ctx.project_name,
                "route": ctx.route_name,
                "provider": ctx.target.provider if ctx.target else None,
                "model": ctx.served_model,
                "stream": ctx.stream,
                "status": status,
                "error_class": error,
                "attempts": len(ctx.attempts),
                "latency_ms": round(wall * 1000, 2),
                "overhead_ms": round(overhead * 1000, 3),
                "ttfb_ms": None if ctx.first_byte_s is None else round(ctx.first_byte_s * 1000, 2),
                "prompt_tokens": usage.prompt_tokens if usage else None,
                "completion_tokens": usage.completion_tokens if usage else None,
                "usage_source": None
                if usage is None
                else ("estimated" if ctx.usage_estimated else "provider"),
                "cost_usd": None if ctx.cost_usd is None else float(ctx.cost_usd),
            }
        )

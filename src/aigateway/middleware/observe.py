"""One access-log line and the request metrics, when a request is really over.

For a stream that is after its last chunk (or the caller going away), so latency,
tokens and status describe the whole exchange. Labels and log fields are names
from the config and counts: never a key, a secret or prompt text.
"""

from __future__ import annotations

import asyncio
import time

from aigateway.accesslog import AccessLog
from aigateway.errors import GatewayError
from aigateway.metrics import Metrics
from aigateway.pipeline import CLIENT_CLOSED, Handler, Reply, RequestContext, StreamReply

_STATUS_CLASS = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}
#: label sets Observe keeps resolved (far more than a config names)
_MAX_SERIES = 10_000


class Observe:
    def __init__(self, metrics: Metrics, logger: AccessLog) -> None:
        self._metrics = metrics
        self._log = logger
        self._series: dict[tuple[str, ...], _RequestSeries] = {}

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
        target = ctx.target
        provider = target.provider if target is not None else "-"
        key = ctx.key.id if ctx.key else "-"
        labels = (ctx.endpoint, project, key, route, provider)
        series = self._series.get(labels)
        if series is None:
            if len(self._series) >= _MAX_SERIES:
                self._series.clear()  # bounded by the config's names; this is a safety net
            series = self._series[labels] = _RequestSeries(m, *labels)
        requests = m.requests.values
        count_as = series.requests[status // 100]
        requests[count_as] = requests.get(count_as, 0.0) + 1
        series.duration.observe(wall)
        series.overhead.observe(overhead)
        usage = ctx.usage
        if ctx.attempts:
            series.upstream.observe(ctx.upstream_s)
            series.genai_duration.observe(ctx.upstream_s)
            if ctx.stream and ctx.first_byte_s is not None:
                series.ttft.observe(ctx.first_byte_s)
                series.genai_ttft.observe(ctx.first_byte_s)
            if usage is not None:
                series.genai_input.observe(usage.prompt_tokens)
                series.genai_output.observe(usage.completion_tokens)
        if usage is not None and target is not None:
            tokens = m.tokens.values
            at = series.input_tokens
            tokens[at] = tokens.get(at, 0.0) + usage.prompt_tokens
            at = series.output_tokens
            tokens[at] = tokens.get(at, 0.0) + usage.completion_tokens
            if usage.cached_tokens:
                at = series.cached_tokens
                tokens[at] = tokens.get(at, 0.0) + usage.cached_tokens
            if usage.reasoning_tokens:
                at = series.reasoning_tokens
                tokens[at] = tokens.get(at, 0.0) + usage.reasoning_tokens
        if ctx.usage_estimated and target is not None:
            m.estimated_usage.inc((target.provider,))
        if ctx.cost_usd is not None:
            cost = m.cost.values
            cost[series.cost] = cost.get(series.cost, 0.0) + float(ctx.cost_usd)
        elif usage is not None and target is not None:
            m.unpriced.inc((provider,))
        for attempt in ctx.attempts:
            outcome = "ok" if attempt.error_class is None else attempt.error_class
            m.attempts.inc((attempt.provider, outcome))
        first_byte = ctx.first_byte_s
        cost_usd = ctx.cost_usd
        self._log.request(
            ctx.request_id,
            ctx.endpoint,
            ctx.key.id if ctx.key else None,
            ctx.project_name,
            ctx.route_name,
            target.provider if target else None,
            ctx.served_model,
            ctx.stream,
            status,
            error,
            len(ctx.attempts),
            round(wall * 1000, 2),
            round(overhead * 1000, 3),
            None if first_byte is None else round(first_byte * 1000, 2),
            usage.prompt_tokens if usage else None,
            usage.completion_tokens if usage else None,
            None if usage is None else ("estimated" if ctx.usage_estimated else "provider"),
            None if cost_usd is None else float(cost_usd),
        )


class _RequestSeries:
    """The metric series one kind of request lands in, resolved once: the label
    tuples of its counters and its histogram series (Observe keeps one per
    endpoint, project, key, route and provider)."""

    __slots__ = (
        "cached_tokens",
        "cost",
        "duration",
        "genai_duration",
        "genai_input",
        "genai_output",
        "genai_ttft",
        "input_tokens",
        "output_tokens",
        "overhead",
        "reasoning_tokens",
        "requests",
        "ttft",
        "upstream",
    )

    def __init__(
        self, m: Metrics, endpoint: str, project: str, key: str, route: str, provider: str
    ) -> None:
        #: by status // 100
        self.requests = {
            n: (project, key, route, provider, status) for n, status in _STATUS_CLASS.items()
        }
        self.duration = m.request_duration.series((route,))
        self.overhead = m.overhead.series((route,))
        self.upstream = m.upstream_duration.series((route,))
        self.ttft = m.ttft.series((route,))
        genai = (endpoint, provider, route)
        self.genai_duration = m.genai_duration.series(genai)
        self.genai_ttft = m.genai_ttft.series(genai)
        self.genai_input = m.genai_tokens.series((*genai, "input"))
        self.genai_output = m.genai_tokens.series((*genai, "output"))
        self.input_tokens = (project, route, provider, "input")
        self.output_tokens = (project, route, provider, "output")
        self.cached_tokens = (project, route, provider, "cached")
        self.reasoning_tokens = (project, route, provider, "reasoning")
        self.cost = (project, route, provider)

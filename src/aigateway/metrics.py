"""Prometheus metrics for the request path, without locks.

prometheus-client's metric objects take a thread lock on every update; the
gateway updates its request metrics only from the event loop, so it keeps them
as plain numbers and renders them through a collector when ``/metrics`` is
scraped (on the same loop, so a scrape always sees a consistent state).

Label values must be names the config declares (project, key id, route,
provider) or fixed words, never raw client input: that keeps series bounded.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from aigateway.routing import RoutingState

Labels = tuple[str, ...]
_CIRCUIT_VALUES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# OpenTelemetry GenAI semantic conventions' advised buckets
GENAI_TOKEN_BUCKETS = tuple(4.0**i for i in range(14))  # 1 ... 67,108,864
GENAI_DURATION_BUCKETS = tuple(0.01 * 2**i for i in range(14))  # 0.01 ... 81.92 s
GENAI_TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1,
    2.5,
    5,
    7.5,
    10,
)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


class LoopCounter:
    def __init__(self, name: str, doc: str, labelnames: Sequence[str]) -> None:
        self.name, self.doc, self.labelnames = name, doc, list(labelnames)
        self.values: dict[Labels, float] = {}

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        values = self.values
        values[labels] = values.get(labels, 0.0) + amount

    def collect(self) -> Metric:
        family = CounterMetricFamily(self.name, self.doc, labels=self.labelnames)
        for labels, value in self.values.items():
            family.add_metric(list(labels), value)
        return family


class LoopGauge:
    def __init__(self, name: str, doc: str) -> None:
        self.name, self.doc = name, doc
        self.value = 0.0

    def collect(self) -> Metric:
        family = GaugeMetricFamily(self.name, self.doc)
        family.add_metric([], self.value)
        return family


class LoopGaugeVec:
    """A gauge per label set (values set on the loop, rendered at scrape time)."""

    def __init__(self, name: str, doc: str, labelnames: Sequence[str]) -> None:
        self.name, self.doc, self.labelnames = name, doc, list(labelnames)
        self.values: dict[Labels, float] = {}

    def set(self, labels: Labels, value: float) -> None:
        self.values[labels] = value

    def collect(self) -> Metric:
        family = GaugeMetricFamily(self.name, self.doc, labels=self.labelnames)
        for labels, value in self.values.items():
            family.add_metric(list(labels), value)
        return family


class Series:
    """One label set of a histogram, kept by the code that observes into it so an
    observation needs no lookup. The series appears in the histogram (and on
    ``/metrics``) with its first observation."""

    __slots__ = ("_counts", "_histogram", "_labels", "_total")

    def __init__(self, histogram: LoopHistogram, labels: Labels) -> None:
        self._histogram, self._labels = histogram, labels
        self._counts: list[int] | None = None
        self._total: list[float] = [0.0]

    def observe(self, value: float) -> None:
        counts = self._counts
        if counts is None:
            counts, self._total = self._histogram.entry(self._labels)
            self._counts = counts
        counts[bisect_left(self._histogram.buckets, value)] += 1
        self._total[0] += value


class LoopHistogram:
    def __init__(
        self, name: str, doc: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        self.name, self.doc, self.labelnames = name, doc, list(labelnames)
        self.buckets = tuple(sorted(buckets))
        #: per label set: counts per bucket (the last is +Inf), then the sum
        self.values: dict[Labels, tuple[list[int], list[float]]] = {}

    def observe(self, labels: Labels, value: float) -> None:
        counts, total = self.entry(labels)
        counts[bisect_left(self.buckets, value)] += 1
        total[0] += value

    def entry(self, labels: Labels) -> tuple[list[int], list[float]]:
        entry = self.values.get(labels)
        if entry is None:
            entry = self.values[labels] = ([0] * (len(self.buckets) + 1), [0.0])
        return entry

    def series(self, labels: Labels) -> Series:
        """One label set, to keep and observe into without a lookup."""
        return Series(self, labels)

    def collect(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)
        for labels, (counts, total) in self.values.items():
            cumulative, running = [], 0
            for bound, count in zip((*self.buckets, float("inf")), counts):
                running += count
                cumulative.append((_le(bound), running))
            family.add_metric(list(labels), cumulative, total[0])
        return family


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class Metrics:
    """The gateway's metrics, on their own registry (tests make one each)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = LoopCounter(
            "aigateway_requests",
            "Requests answered, by who asked, what they asked for and the status class.",
            ["project", "key", "route", "provider", "status"],
        )
        self.request_duration = LoopHistogram(
            "aigateway_request_duration_seconds",
            "Wall time from request to last byte.",
            ["route"],
            LATENCY_BUCKETS,
        )
        self.overhead = LoopHistogram(
            "aigateway_overhead_seconds",
            "Gateway time per request: wall time minus time waiting on upstreams.",
            ["route"],
            OVERHEAD_BUCKETS,
        )
        self.upstream_duration = LoopHistogram(
            "aigateway_upstream_duration_seconds",
            "Time spent waiting on upstreams per request (all attempts).",
            ["route"],
            LATENCY_BUCKETS,
        )
        self.ttft = LoopHistogram(
            "aigateway_time_to_first_token_seconds",
            "Time from request to the first streamed chunk sent to the caller.",
            ["route"],
            LATENCY_BUCKETS,
        )
        self.tokens = LoopCounter(
            "aigateway_tokens",
            "Tokens by type as reported by the provider.",
            ["project", "route", "provider", "type"],
        )
        self.cost = LoopCounter(
            "aigateway_cost_usd",
            "What requests cost, in US dollars, by project, route and provider.",
            ["project", "route", "provider"],
        )
        self.unpriced = LoopCounter(
            "aigateway_unpriced_requests",
            "Requests whose model has no price (cost unknown), by provider.",
            ["provider"],
        )
        self.attempts = LoopCounter(
            "aigateway_upstream_attempts",
            "Calls to upstream targets by outcome.",
            ["provider", "outcome"],
        )
        self.in_flight = LoopGauge("aigateway_in_flight_requests", "Requests being handled now.")
        # the same measurements under OpenTelemetry GenAI names; gen_ai_request_model
        # is the route (a name from the config), never the raw model string
        genai = ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model"]
        self.genai_tokens = LoopHistogram(
            "gen_ai_client_token_usage",
            "Tokens per request by gen_ai_token_type (input, output).",
            [*genai, "gen_ai_token_type"],
            GENAI_TOKEN_BUCKETS,
        )
        self.genai_duration = LoopHistogram(
            "gen_ai_server_request_duration_seconds",
            "Time the provider took per request (all attempts).",
            genai,
            GENAI_DURATION_BUCKETS,
        )
        self.genai_ttft = LoopHistogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time to the first streamed chunk.",
            genai,
            GENAI_TTFT_BUCKETS,
        )
        self.budget_remaining = LoopGaugeVec(
            "aigateway_budget_remaining",
            "What a budget had left when a request last settled (USD or tokens), per "
            "scope (project:NAME, key:ID), window and unit.",
            ["scope", "window", "unit"],
        )
        self.budget_reserved = LoopGaugeVec(
            "aigateway_budget_reserved",
            "What a budget held reserved for requests in flight when one was last admitted "
            "(USD or tokens), per scope, window and unit.",
            ["scope", "window", "unit"],
        )
        self.cache = LoopCounter(
            "aigateway_cache_requests",
            "Requests to cached routes by result (hit, miss, semantic_hit, semantic_error).",
            ["route", "result"],
        )
        self.cache_saved = LoopCounter(
            "aigateway_cache_saved_usd",
            "What cache hits would have cost, in US dollars.",
            ["project", "route"],
        )
        self.guardrail_hits = LoopCounter(
            "aigateway_guardrail_hits",
            "Guardrail hits by project, rule, action and direction (request, response).",
            ["project", "rule", "action", "direction"],
        )
        self.limited = LoopCounter(
            "aigateway_limited_requests",
            "Requests refused by a limit: reason rate, concurrency, budget or state_unavailable.",
            ["project", "key", "reason"],
        )
        self.state_errors = LoopCounter(
            "aigateway_state_errors",
            "Failed calls to the shared state (Redis) by operation, and what was done instead.",
            ["operation", "fallback"],
        )
        self.prompt_log_rows = LoopCounter(
            "aigateway_prompt_log_rows", "Rows committed to the prompt log.", []
        )
        self.prompt_log_dropped = LoopCounter(
            "aigateway_prompt_log_dropped",
            "Prompt-log rows never written, by reason (queue_full, write_failed, closed).",
            ["reason"],
        )
        self.prompt_log_errors = LoopCounter(
            "aigateway_prompt_log_write_errors",
            "Failed prompt-log commits (rows are kept and retried), by error.",
            ["error"],
        )
        self.prompt_log_queue = LoopGauge(
            "aigateway_prompt_log_queue_rows", "Prompt-log rows waiting to be committed."
        )
        self.estimated_usage = LoopCounter(
            "aigateway_estimated_usage_requests",
            "Requests billed from a local token count because the provider sent no usage.",
            ["provider"],
        )
        #: set by the app: circuit states are read from it at scrape time
        self.routing: RoutingState | None = None
        self._loop_metrics = (
            self.requests,
            self.request_duration,
            self.overhead,
            self.upstream_duration,
            self.ttft,
            self.tokens,
            self.cost,
            self.unpriced,
            self.attempts,
            self.in_flight,
            self.genai_tokens,
            self.genai_duration,
            self.genai_ttft,
            self.budget_remaining,
            self.budget_reserved,
            self.guardrail_hits,
            self.cache,
            self.cache_saved,
            self.limited,
            self.state_errors,
            self.estimated_usage,
            self.prompt_log_rows,
            self.prompt_log_dropped,
            self.prompt_log_errors,
            self.prompt_log_queue,
        )
        self.registry.register(self)
        self.config_info = Gauge(
            "aigateway_config_info",
            "The loaded configuration (value 1), labelled by its SHA-256.",
            ["sha256"],
            registry=self.registry,
        )
        self.config_reloads = Counter(
            "aigateway_config_reloads",
            "Config reload attempts by result: success, failure (old config kept), unchanged.",
            ["result"],
            registry=self.registry,
        )
        self.config_last_reload_success = Gauge(
            "aigateway_config_last_reload_success_timestamp_seconds",
            "When the serving config was loaded (start-up or the last successful reload).",
            registry=self.registry,
        )

    def collect(self) -> Iterator[Metric]:
        for metric in self._loop_metrics:
            yield metric.collect()
        yield self._circuit_states()

    def _circuit_states(self) -> Metric:
        family = GaugeMetricFamily(
            "aigateway_circuit_state",
            "Circuit breaker per target: 0 closed, 1 half-open (probing), 2 open (skipped).",
            labels=["provider", "model"],
        )
        if self.routing is not None:
            now = self.routing.clock()
            for (provider, model), stats in self.routing.targets.items():
                state = stats.breaker.state(now)
                family.add_metric([provider, model], _CIRCUIT_VALUES[state])
        return family

    def describe(self) -> Iterator[Metric]:
        return self.collect()

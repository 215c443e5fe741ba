"""Routing logic, pure: strategies, circuit breakers, the retry budget, backoff."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from aigateway import retries
from aigateway.config.model import CircuitBreaker, RetryPolicy, Route
from aigateway.errors import (
    InvalidRequest,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from aigateway.routing import Breaker, RetryBudget, RoutingState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def route(strategy: str, weights: tuple[int, ...] = (1, 1, 1), **breaker: float) -> Route:
    return Route.model_validate(
        {
            "strategy": strategy,
            "targets": [
                {"provider": f"p{i}", "model": f"m{i}", "weight": w} for i, w in enumerate(weights)
            ],
            "circuit_breaker": breaker,
        }
    )


def first_picks(state: RoutingState, r: Route, n: int) -> Counter[str]:
    return Counter(state.order("r", r)[0].provider for _ in range(n))


@pytest.mark.parametrize("weights", [(1, 2, 7), (5, 3, 2), (1, 1, 1), (10, 0, 1)])
def test_weighted_stays_within_two_percent_over_ten_thousand_picks(weights) -> None:
    state = RoutingState(clock=Clock(), rng=random.Random(1))
    picks = first_picks(state, route("weighted", weights), 10_000)
    total = sum(weights)
    for i, w in enumerate(weights):
        assert abs(picks[f"p{i}"] / 10_000 - w / total) <= 0.02


def test_weighted_is_smooth() -> None:
    state = RoutingState(clock=Clock())
    r = route("weighted", (5, 1, 1))
    sequence = [state.order("r", r)[0].provider for _ in range(7)]
    assert sequence == ["p0", "p0", "p1", "p0", "p2", "p0", "p0"]  # nginx's example


def test_round_robin_and_fallback_order() -> None:
    state = RoutingState(clock=Clock())
    picks = first_picks(state, route("round_robin"), 9_000)
    assert set(picks.values()) == {3000}
    order = state.order("r", route("fallback"))
    assert [t.provider for t in order] == ["p0", "p1", "p2"]
    # the others follow as fallbacks, in configured order
    rr = route("round_robin")
    assert [t.provider for t in state.order("rr", rr)] == ["p1", "p0", "p2"]


def test_least_busy_picks_fewest_in_flight() -> None:
    state = RoutingState(clock=Clock())
    r = route("least_busy")
    breaker = r.circuit_breaker
    state.stats(r.targets[0], breaker).in_flight = 3
    state.stats(r.targets[1], breaker).in_flight = 1
    state.stats(r.targets[2], breaker).in_flight = 2
    assert state.order("r", r)[0].provider == "p1"


def test_least_latency_moves_away_from_a_slow_target_and_back() -> None:
    state = RoutingState(clock=Clock(), rng=random.Random(7))
    r = route("least_latency", (1, 1))
    latency = {"p0": 0.1, "p1": 0.3}

    def run(n: int) -> Counter[str]:
        picks: Counter[str] = Counter()
        for _ in range(n):
            target = state.order("r", r)[0]
            picks[target.provider] += 1
            state.stats(target, r.circuit_breaker).observe_ttfb(latency[target.provider])
        return picks

    assert run(1000)["p0"] > 900
    latency["p0"] = 2.0  # p0 slows down
    assert run(1000)["p1"] > 900
    latency["p0"] = 0.05  # and recovers: exploration finds out
    assert run(1000)["p0"] > 800


def test_breaker_opens_half_opens_and_closes() -> None:
    clock = Clock()
    b = Breaker(CircuitBreaker(failures=3, window_s=10, cooldown_s=30))
    for _ in range(2):
        b.on_failure(clock.now)
    assert b.state(clock.now) == "closed"
    clock.now += 11  # old failures leave the window
    for _ in range(2):
        b.on_failure(clock.now)
    assert b.available(clock.now)
    b.on_failure(clock.now)
    assert b.state(clock.now) == "open" and not b.available(clock.now)
    clock.now += 30
    assert b.state(clock.now) == "half_open" and b.available(clock.now)
    b.on_attempt(clock.now)
    assert not b.available(clock.now)  # one probe at a time
    b.on_failure(clock.now)
    assert b.state(clock.now) == "open"
    clock.now += 30
    b.on_attempt(clock.now)
    b.on_success()
    assert b.state(clock.now) == "closed" and b.available(clock.now)


def test_open_targets_go_last() -> None:
    clock = Clock()
    state = RoutingState(clock=clock)
    r = route("fallback", failures=1)
    state.stats(r.targets[0], r.circuit_breaker).breaker.on_failure(clock.now)
    assert [t.provider for t in state.order("r", r)] == ["p1", "p2", "p0"]


def test_disabled_breaker_never_opens() -> None:
    b = Breaker(CircuitBreaker(enabled=False, failures=1))
    b.on_failure(0)
    assert b.available(0)


def test_retry_budget_bounds_extra_attempts() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.2, minimum=10, window_s=10, clock=clock)
    for _ in range(1000):
        budget.on_request()
    spent = sum(budget.try_spend() for _ in range(1000))
    assert spent == 210
    clock.now += 10  # the window moves on
    assert budget.try_spend()


def test_state_survives_for_unchanged_targets() -> None:
    clock = Clock()
    state = RoutingState(clock=clock)
    old = route("fallback", failures=1)
    state.stats(old.targets[0], old.circuit_breaker).breaker.on_failure(clock.now)
    new = route("fallback", (1, 1), failures=1)  # p2 removed, p0 and p1 unchanged
    assert state.stats(new.targets[0], new.circuit_breaker).breaker.state(clock.now) == "open"


POLICY = RetryPolicy(
    attempts=3, initial_backoff_s=0.5, max_backoff_s=4, retry_on=[429, 503, "timeout", "connect"]
)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (UpstreamStatusError(503, "x"), True),
        (UpstreamStatusError(429, "x"), True),
        (UpstreamStatusError(500, "x"), False),  # not in this policy
        (UpstreamStatusError(400, "x"), False),
        (UpstreamStatusError(401, "x"), False),
        (UpstreamStatusError(404, "x"), False),
        (UpstreamStatusError(422, "x"), False),
        (UpstreamTimeout("x"), True),
        (UpstreamConnectError("x"), True),
        (UpstreamProtocolError("x"), False),  # counts as 502, not listed
        (InvalidRequest("x"), False),
        (ValueError("x"), False),
    ],
)
def test_retryable(exc: BaseException, expected: bool) -> None:
    assert retries.retryable(POLICY, exc) is expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "0.25"}, 0.25),
        ({"retry-after-ms": "150"}, 0.15),
        ({"retry-after": "3600"}, 4.0),  # capped at max_backoff_s
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),  # falls back
    ],
)
def test_retry_after_is_honoured_up_to_a_cap(headers, expected) -> None:
    exc = UpstreamStatusError(429, "x", headers=headers)
    wait = retries.backoff_s(POLICY, 1, exc, random.Random(0))
    if expected is None:
        assert 0.25 <= wait <= 0.5
    else:
        assert wait == pytest.approx(expected)


def test_exponential_backoff_with_jitter() -> None:
    rng = random.Random(3)
    for attempt, step in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (8, 4.0)]:
        waits = [retries.backoff_s(POLICY, attempt, None, rng) for _ in range(200)]
        assert all(step / 2 <= w <= step for w in waits)
        assert max(waits) - min(waits) > step / 4  # jittered, not constant

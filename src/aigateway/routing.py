"""Which target to try, in which order; when a target is broken; when retrying is allowed.

Pure logic with an injected clock and random source, so it is tested without
servers. The mutable parts (target statistics, circuit breakers, strategy
counters) live in a ``RoutingState`` that outlives config reloads: a target that
did not change keeps its statistics and its breaker.

Strategies pick the *first* target; the others follow in configured order as
fallbacks:

- ``fallback``: configured order;
- ``weighted``: smooth weighted round robin (nginx's), exact over any window;
- ``round_robin``: rotate through the targets;
- ``least_latency``: lowest EWMA of time to first byte; a target with no sample
  yet is tried first, and 5% of picks explore at random so a recovered target
  gets traffic again;
- ``least_busy``: fewest requests in flight.

Targets whose circuit is open are moved behind all others, so a request goes to
a broken target only when every target is broken (when its cooldown has passed,
one probe at a time is let through: half-open).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aigateway.config.model import CircuitBreaker, Route, Target

TargetKey = tuple[str, str]  # (provider, upstream model)
EWMA_ALPHA = 0.3
EXPLORE = 0.05


def target_key(target: Target) -> TargetKey:
    return (target.provider, target.model)


@dataclass
class Breaker:
    """A circuit breaker: closed → open after ``failures`` in ``window_s`` → half-open
    after ``cooldown_s`` (one probe at a time) → closed on a success."""

    settings: CircuitBreaker
    failures: deque[float] = field(default_factory=deque)
    open_until: float = 0.0
    probing: bool = False

    def state(self, now: float) -> str:
        if self.open_until == 0.0:
            return "closed"
        return "open" if now < self.open_until else "half_open"

    def available(self, now: float) -> bool:
        if not self.settings.enabled:
            return True
        state = self.state(now)
        return state == "closed" or (state == "half_open" and not self.probing)

    def on_attempt(self, now: float) -> None:
        if self.state(now) == "half_open":
            self.probing = True

    def on_success(self) -> None:
        self.failures.clear()
        self.open_until = 0.0
        self.probing = False

    def on_failure(self, now: float) -> None:
        if not self.settings.enabled:
            return
        if self.state(now) == "half_open":  # the probe failed: open again
            self.open_until = now + self.settings.cooldown_s
            self.probing = False
            return
        self.failures.append(now)
        while self.failures and self.failures[0] <= now - self.settings.window_s:
            self.failures.popleft()
        if len(self.failures) >= self.settings.failures:
            self.open_until = now + self.settings.cooldown_s
            self.failures.clear()


@dataclass
class TargetStats:
    breaker: Breaker
    in_flight: int = 0
    ewma_ttfb_s: float | None = None

    def observe_ttfb(self, seconds: float) -> None:
        if self.ewma_ttfb_s is None:
            self.ewma_ttfb_s = seconds
        else:
            self.ewma_ttfb_s += EWMA_ALPHA * (seconds - self.ewma_ttfb_s)


@dataclass
class RouteCounters:
    #: smooth weighted round robin: current weight per target
    current: dict[TargetKey, int] = field(default_factory=dict)
    turn: int = 0


class RetryBudget:
    """Extra attempts (retries and fallbacks) allowed over a sliding window:
    at most ``ratio`` times requests, plus ``minimum``. An outage then multiplies upstream
    traffic by at most 1 + ratio, plus a constant."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],  # (before the defaults: mypyc needs that order)
        ratio: float = 0.2,
        minimum: int = 10,
        window_s: int = 10,
    ) -> None:
        self._ratio, self._minimum, self._window = ratio, minimum, window_s
        self._clock = clock
        self._requests = [0] * window_s
        self._extra = [0] * window_s
        self._second = int(clock())

    def _advance(self) -> int:
        now = int(self._clock())
        if now - self._second >= self._window:
            self._requests = [0] * self._window
            self._extra = [0] * self._window
        else:
            for second in range(self._second + 1, now + 1):
                self._requests[second % self._window] = 0
                self._extra[second % self._window] = 0
        self._second = max(self._second, now)
        return now % self._window

    def on_request(self) -> None:
        self._requests[self._advance()] += 1

    def try_spend(self) -> bool:
        slot = self._advance()
        if sum(self._extra) >= self._ratio * sum(self._requests) + self._minimum:
            return False
        self._extra[slot] += 1
        return True


class RoutingState:
    """Everything routing remembers, kept across config reloads by identity."""

    def __init__(self, *, clock: Callable[[], float], rng: random.Random | None = None) -> None:
        self.clock = clock
        self.rng = rng or random.Random()
        self.targets: dict[TargetKey, TargetStats] = {}
        self.routes: dict[str, RouteCounters] = {}
        self.budget = RetryBudget(clock=clock)

    def stats(self, target: Target, breaker: CircuitBreaker) -> TargetStats:
        key = target_key(target)
        found = self.targets.get(key)
        if found is None:
            found = self.targets[key] = TargetStats(Breaker(breaker))
        elif found.breaker.settings is not breaker:  # a reload: same target, maybe new settings
            found.breaker.settings = breaker
        return found

    def order(self, route_name: str, route: Route) -> Sequence[Target]:
        """The targets in the order to try them for one request (do not modify)."""
        targets = route.targets
        if len(targets) == 1:
            return targets
        now = self.clock()
        first = self._pick(route_name, route)
        ordered = [targets[first], *(t for i, t in enumerate(targets) if i != first)]
        healthy = [
            t for t in ordered if self.stats(t, route.circuit_breaker).breaker.available(now)
        ]
        broken = [t for t in ordered if t not in healthy]
        return healthy + broken

    def _pick(self, route_name: str, route: Route) -> int:
        targets = route.targets
        strategy = route.strategy
        now = self.clock()
        usable = [
            i
            for i, t in enumerate(targets)
            if self.stats(t, route.circuit_breaker).breaker.available(now)
        ]
        if not usable:
            return 0
        if strategy == "fallback":
            return usable[0]
        counters = self.routes.setdefault(route_name, RouteCounters())
        if strategy == "weighted":
            return _smooth_weighted(targets, usable, counters)
        if strategy == "round_robin":
            counters.turn += 1
            return usable[counters.turn % len(usable)]
        stats = [self.stats(targets[i], route.circuit_breaker) for i in usable]
        if strategy == "least_busy":
            return usable[min(range(len(usable)), key=lambda j: stats[j].in_flight)]
        # least_latency
        unknown = [usable[j] for j, s in enumerate(stats) if s.ewma_ttfb_s is None]
        if unknown:
            return unknown[0]
        if self.rng.random() < EXPLORE:
            return self.rng.choice(usable)
        return usable[min(range(len(usable)), key=lambda j: stats[j].ewma_ttfb_s or 0.0)]


def _smooth_weighted(targets: Sequence[Target], usable: list[int], counters: RouteCounters) -> int:
    total = 0
    best = -1
    best_weight = 0
    for i in usable:
        key = target_key(targets[i])
        weight = targets[i].weight
        total += weight
        counters.current[key] = counters.current.get(key, 0) + weight
        if best < 0 or counters.current[key] > best_weight:
            best, best_weight = i, counters.current[key]
    counters.current[target_key(targets[best])] -= total
    return best

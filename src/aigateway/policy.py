"""Which limits apply to a key (compiled once per config), the checks they make on
a route for the current budget windows (built once, shared by its requests), and
the headers an admission gives.

A key is limited by its own ``rate_limits``/``budgets``, its project's, and its
``route_rate_limits`` for the route asked for. Counter names are built from the
names in the config (scope, window), never from the limit's size, so changing
a limit in a reload keeps what was counted; renaming a key or project starts
from zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aigateway import limits
from aigateway.config.model import Budget, GatewayConfig, RateLimits
from aigateway.quota import Admission, Plan, QuotaCheck, RateCheck, RateStatus, SlotCheck
from aigateway.tokens import encoding_name


@dataclass(frozen=True, slots=True)
class BudgetRule:
    window: str
    #: counter name without the window id: "q:<scope>:<window>"
    base: str
    usd_nano: int | None
    tokens: int | None


@dataclass(frozen=True, slots=True)
class Scope:
    """One set of limits, compiled: the constant checks are built once."""

    #: "k:<key id>", "p:<project>" or "r:<key id>:<route>"
    name: str
    budgets: tuple[BudgetRule, ...] = ()
    #: rpm: the same check for every request
    rpm: RateCheck | None = None
    tpm: int | None = None
    slot: SlotCheck | None = None

    @classmethod
    def of(cls, name: str, rate_limits: RateLimits | None, budgets: Sequence[Budget]) -> Scope:
        rl = rate_limits or RateLimits()
        return cls(
            name,
            tuple(
                BudgetRule(
                    b.window,
                    f"q:{name}:{b.window}",
                    limits.to_nano(b.usd) if b.usd is not None else None,
                    b.tokens,
                )
                for b in budgets
            ),
            RateCheck(f"rpm:{name}", rl.rpm, 1, 0, "requests") if rl.rpm is not None else None,
            rl.tpm,
            SlotCheck(f"conc:{name}", rl.concurrency) if rl.concurrency is not None else None,
        )


@dataclass(frozen=True, slots=True)
class Policy:
    scopes: tuple[Scope, ...]
    #: route name → the key's limits on that route
    routes: Mapping[str, Scope]

    def scopes_for(self, route: str | None) -> tuple[Scope, ...]:
        extra = self.routes.get(route) if route is not None else None
        return self.scopes if extra is None else (*self.scopes, extra)

    def counts_tokens(self, route: str | None) -> bool:
        return any(s.budgets or s.tpm for s in self.scopes_for(route))


def compile_policies(config: GatewayConfig) -> dict[str, Policy]:
    """Key id → its policy; keys with no limit at all are absent (no work per request)."""
    out: dict[str, Policy] = {}
    for key in config.keys:
        project = config.projects.get(key.project)
        scopes = []
        if key.rate_limits is not None or key.budgets:
            scopes.append(Scope.of(f"k:{key.id}", key.rate_limits, key.budgets))
        if project is not None and (project.rate_limits is not None or project.budgets):
            scopes.append(Scope.of(f"p:{key.project}", project.rate_limits, project.budgets))
        routes = {
            route: Scope.of(f"r:{key.id}:{route}", limits_, ())
            for route, limits_ in key.route_rate_limits.items()
        }
        if scopes or routes:
            out[key.id] = Policy(tuple(scopes), routes)
    return out


def token_needs(config: GatewayConfig) -> set[str]:
    """The tokenizer vocabularies this config's limits will count with."""
    policies = compile_policies(config).values()
    routes = {name for p in policies for name in config.models if p.counts_tokens(name)}
    models = [t.model for name in routes for t in config.models[name].targets if t.model != "*"]
    return {encoding_name(m) for m in models} | ({"o200k_base"} if routes else set())


@dataclass(frozen=True, slots=True)
class Prices:
    """Worst-case nano-USD per token over a route's targets (0: unpriced or free)."""

    input: int
    output: int


class Windows:
    """The current budget window of each kind, recomputed only when one ends."""

    def __init__(self) -> None:
        self._current: dict[str, limits.Window] = {}

    def get(self, kind: str, now: float) -> limits.Window:
        window = self._current.get(kind)
        if window is None or (window.ends is not None and now >= window.ends):
            window = self._current[kind] = limits.budget_window(kind, now)
        return window


@dataclass(frozen=True, slots=True)
class Checks:
    """A key's checks on one route for the budget windows current until ``until``:
    built once and shared by its requests (each plan adds its own token counts)."""

    quotas: tuple[QuotaCheck, ...]
    rates: tuple[RateCheck, ...]
    slots: tuple[SlotCheck, ...]
    #: per quota check: the labels of its gauges, (scope, window, unit)
    labels: tuple[tuple[str, str, str], ...]
    #: some check counts the prompt's tokens (a budget or a token rate)
    counts_tokens: bool
    #: when the first of its budget windows ends (unix s; inf when none does)
    until: float

    @property
    def settles(self) -> bool:
        """A request leaves something to settle: a reservation, a slot, or a token
        rate to correct (a requests-per-minute count is final at admission)."""
        return bool(self.quotas or self.slots) or any(r.kind == "tokens" for r in self.rates)


def compile_checks(
    scopes: Sequence[Scope], *, prices: Prices, windows: Windows, now: float
) -> Checks:
    quotas: list[QuotaCheck] = []
    labels: list[tuple[str, str, str]] = []
    rates: list[RateCheck] = []
    slots: list[SlotCheck] = []
    until = math.inf
    for scope in scopes:
        kind, _, rest = scope.name.partition(":")
        label = f"{'project' if kind == 'p' else 'key'}:{rest.split(':')[0]}"
        for rule in scope.budgets:
            window = windows.get(rule.window, now)
            if window.ends is not None:
                until = min(until, window.ends)
            base = f"{rule.base}:{window.id}"
            if rule.usd_nano is not None:
                quotas.append(
                    QuotaCheck(
                        base + ":usd",
                        rule.usd_nano,
                        0,
                        prices.output,
                        "usd",
                        window.ends,
                        per_prompt=prices.input,
                    )
                )
                labels.append((label, rule.window, "usd"))
            if rule.tokens is not None:
                quotas.append(
                    QuotaCheck(base + ":tokens", rule.tokens, 0, 1, "tokens", window.ends, 1)
                )
                labels.append((label, rule.window, "tokens"))
        if scope.rpm is not None:
            rates.append(scope.rpm)
        if scope.tpm is not None:
            rates.append(RateCheck(f"tpm:{scope.name}", scope.tpm, 0, 1, "tokens", 1))
        if scope.slot is not None:
            slots.append(scope.slot)
    return Checks(
        tuple(quotas),
        tuple(rates),
        tuple(slots),
        tuple(labels),
        counts_tokens=any(s.budgets or s.tpm for s in scopes),
        until=until,
    )


def rate_headers(statuses: Sequence[RateStatus]) -> dict[str, str]:
    """OpenAI's ``x-ratelimit-*`` headers from the tightest limit of each kind
    (the smallest share left, then the fewest left; the first of equals)."""
    requests: RateStatus | None = None
    tokens: RateStatus | None = None
    for status in statuses:
        if status.kind == "requests":
            if requests is None or _tighter(status, requests):
                requests = status
        elif tokens is None or _tighter(status, tokens):
            tokens = status
    out: dict[str, str] = {}
    for kind, tight in (("requests", requests), ("tokens", tokens)):
        if tight is not None:
            out[f"x-ratelimit-limit-{kind}"] = str(tight.limit)
            out[f"x-ratelimit-remaining-{kind}"] = str(tight.remaining)
            out[f"x-ratelimit-reset-{kind}"] = limits.duration(tight.reset_s)
    return out


def _tighter(a: RateStatus, b: RateStatus) -> bool:
    share_a, share_b = a.remaining / a.limit, b.remaining / b.limit
    return share_a < share_b or (share_a == share_b and a.remaining < b.remaining)


def budget_left_nano(plan: Plan, admission: Admission, used: Sequence[int]) -> int | None:
    """The tightest USD budget's remaining nano-dollars, given what this request used
    of each (None when no USD budget applies, or when the store could not say:
    Redis unreachable and budgets allowed)."""
    if len(admission.free) != len(plan.quotas):
        return None
    left: int | None = None
    for check, free, spent in zip(plan.quotas, admission.free, used):
        if check.unit == "usd" and (left is None or free - spent < left):
            left = free - spent
    return None if left is None else max(0, left)

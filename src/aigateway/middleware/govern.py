"""Rate limits and budgets: admit (reserving the worst case), then settle.

Admission counts the prompt with the offline tokenizer, reserves
``prompt * input price + max_tokens * output price`` (the route's dearest
target) on every budget that applies, counts the request and its tokens against
the rate limits and takes a concurrency slot, all in one atomic store call.
When the caller set no ``max_tokens`` and a budget applies, the gateway sends the
largest ``max_tokens`` the budgets can pay for (at most the target's cap or
``governance.default_max_tokens``), so a request can never spend more than was
reserved.

Settlement replaces the reservation with what was really used, exactly once:
at once for a whole answer, when the stream ends for a stream, on failure or
cancellation otherwise (a request that reached a provider and got no usage back
is billed from a local count, ``usage_source=estimated``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aigateway import limits
from aigateway.config.model import Governance, Key, Route
from aigateway.errors import BudgetExceeded, GatewayError, LimitsUnavailable, RateLimited
from aigateway.metrics import Metrics
from aigateway.middleware.cache import cache_rule
from aigateway.pipeline import Handler, Reply, RequestContext, StreamReply
from aigateway.policy import (
    Checks,
    Policy,
    Prices,
    Windows,
    budget_left_nano,
    compile_checks,
    rate_headers,
)
from aigateway.quota import Admission, LimitStore, Plan, Settlement
from aigateway.tokens import Tokenizer
from aigateway.usage import Usage

#: (provider, model) → worst (input, output) USD per million tokens; None: unpriced
WorstPrice = Callable[[str, str], tuple[Decimal, Decimal] | None]
Spawn = Callable[[str, Coroutine[Any, Any, Any]], object]
_MAX_ROUTE_CACHE = 4096
#: (key id, route, wildcard) → what governs that key's requests on that route
_Governed = tuple[str, str | None, str | None]


@dataclass(frozen=True, slots=True)
class _RouteFacts:
    #: the upstream models the route may use (tokenizer choice)
    models: tuple[str, ...]
    #: the dearest input and output token among them
    prices: Prices
    #: the max_tokens cap all targets apply, if they all have one
    cap: int | None


@dataclass(frozen=True, slots=True)
class _Rules:
    """A key's checks on a route for the current budget windows, and the route's facts."""

    facts: _RouteFacts
    checks: Checks


class Govern:
    def __init__(
        self,
        policies: dict[str, Policy],
        store: LimitStore,
        *,
        tokenizer: Tokenizer,
        worst_price: WorstPrice,
        cost: Callable[[RequestContext, Usage | None], Decimal | None],
        settings: Governance,
        metrics: Metrics,
        spawn: Spawn,
        routes: Mapping[str, Route] | None = None,
    ) -> None:
        #: every route by name (the semantic cache's embeddings routes are priced too)
        self._all_routes = routes or {}
        self._policies = policies
        self._store = store
        self._tokenizer = tokenizer
        self._worst_price = worst_price
        self._cost = cost
        self._settings = settings
        self._metrics = metrics
        self._spawn = spawn
        self._rules: dict[_Governed, _Rules] = {}
        self._windows = Windows()

    def applies(self, key: Key, route: str) -> bool:
        policy = self._policies.get(key.id)
        return policy is not None and bool(policy.scopes_for(route))

    async def __call__(self, ctx: RequestContext, call_next: Handler) -> Reply:
        key = ctx.key
        policy = self._policies.get(key.id) if key is not None else None
        if policy is None or key is None:
            return await call_next(ctx)
        now = time.time()
        rules = self._rules.get((key.id, ctx.route_name, ctx.wildcard))
        if rules is None or now >= rules.checks.until:
            rules = self._compile(ctx, key.id, policy, now)
            if rules is None:
                return await call_next(ctx)
        checks = rules.checks
        plan, asked = self._plan(ctx, rules)
        admission = await self._store.admit(plan, now)
        if not admission.admitted:
            raise self._refusal(ctx, plan, admission)
        if plan.quotas:
            self._gauge_reserved(plan, admission, checks)
            if asked is None and ctx.is_chat:
                ctx.body["max_tokens"] = admission.units  # what the budgets can pay for
                ctx.max_tokens_by_gateway = True
        if admission.rates:
            ctx.response_headers.update(rate_headers(admission.rates))
        try:
            reply = await call_next(ctx)
        except asyncio.CancelledError:
            self._bill_unanswered(ctx)
            self._spawn("settle", self._settle(ctx, plan, admission, rules))
            raise
        except BaseException:
            await self._settle(ctx, plan, admission, rules)
            raise
        if isinstance(reply, StreamReply):
            left = budget_left_nano(plan, admission, _reserved(plan, admission.units))
            if left is not None:
                ctx.response_headers["x-aigateway-budget-remaining-usd"] = limits.usd_text(left)

            if checks.settles:

                def settle_at_end(status: int, error: str | None) -> None:
                    self._spawn("settle", self._settle(ctx, plan, admission, rules))

                reply.on_end.append(settle_at_end)
            return reply
        used = await self._settle(ctx, plan, admission, rules)
        left = budget_left_nano(plan, admission, used)
        if left is not None:
            ctx.response_headers["x-aigateway-budget-remaining-usd"] = limits.usd_text(left)
        return reply

    def _gauge_reserved(self, plan: Plan, admission: Admission, checks: Checks) -> None:
        gauge = self._metrics.budget_reserved
        mine = _reserved(plan, admission.units)
        # (admission.reserved is empty when the store could not say: no gauge then)
        for check, held, own, labels in zip(plan.quotas, admission.reserved, mine, checks.labels):
            value = held + own
            gauge.set(labels, value / 1e9 if check.unit == "usd" else float(value))

    # --- admission -------------------------------------------------------------------

    def _compile(self, ctx: RequestContext, key: str, policy: Policy, now: float) -> _Rules | None:
        """The checks of this key on this route (None: no limit applies there), kept
        until a budget window they count in ends."""
        scopes = policy.scopes_for(ctx.route_name)
        if not scopes:
            return None
        facts = self._route_facts(ctx)
        checks = compile_checks(scopes, prices=facts.prices, windows=self._windows, now=now)
        if len(self._rules) >= _MAX_ROUTE_CACHE:
            self._rules.clear()  # wildcard routes: model names come from callers
        rules = self._rules[(key, ctx.route_name, ctx.wildcard)] = _Rules(facts, checks)
        return rules

    def _plan(self, ctx: RequestContext, rules: _Rules) -> tuple[Plan, int | None]:
        facts, checks = rules.facts, rules.checks
        prompt = 0
        if checks.counts_tokens:
            if ctx.is_chat:
                prompt = self._tokenizer.chat_prompt(ctx.body, facts.models)
            else:
                prompt = self._tokenizer.embeddings_input(ctx.body, facts.models)
            ctx.prompt_tokens_est = prompt
        asked = _asked_max_tokens(ctx.body)
        if not ctx.is_chat:
            low = high = 0
        elif asked is not None:
            low = high = min(asked, facts.cap or asked)
        else:
            low, high = 1, facts.cap or self._settings.default_max_tokens
        plan = Plan(
            ctx.request_id,
            checks.quotas,
            checks.rates,
            checks.slots,
            prompt_tokens=prompt,
            min_units=low,
            max_units=high,
            lease_s=self._settings.lease_s,
        )
        return plan, asked

    def _route_facts(self, ctx: RequestContext) -> _RouteFacts:
        """What admission needs to know of the route (kept with the key's checks)."""
        rule = cache_rule(ctx)
        lookup = rule.semantic.embeddings if rule is not None and rule.semantic else None
        route = ctx.route
        assert route is not None
        worst_in = worst_out = Decimal(0)
        targets = [*route.targets]
        if route.content_filter_fallback is not None:
            targets.append(route.content_filter_fallback)
        for target in targets:
            model = target.model if target.model != "*" else (ctx.wildcard or "")
            price = self._worst_price(target.provider, model)
            if price is not None:
                worst_in, worst_out = max(worst_in, price[0]), max(worst_out, price[1])
        embedder = self._all_routes.get(lookup) if lookup is not None else None
        if embedder is not None:  # the semantic cache embeds (part of) the prompt first
            worst_in += max(
                (p[0] for t in embedder.targets if (p := self._worst_price(t.provider, t.model))),
                default=Decimal(0),
            )
        caps = [t.max_tokens for t in route.targets]
        return _RouteFacts(
            models=tuple(t.model if t.model != "*" else (ctx.wildcard or "") for t in targets),
            prices=Prices(limits.nano_per_token(worst_in), limits.nano_per_token(worst_out)),
            # the output cap every target applies, if they all have one (the largest:
            # the request may go to any of them)
            cap=max(c for c in caps if c is not None) if all(caps) else None,
        )

    def _refusal(self, ctx: RequestContext, plan: Plan, admission: Admission) -> GatewayError:
        project, key = ctx.project_name or "-", ctx.key.id if ctx.key else "-"
        reason = admission.refused or "rate"
        self._metrics.limited.inc(
            (project, key, "state_unavailable" if reason == "unavailable" else reason)
        )
        if reason == "budget":
            check = plan.quotas[admission.refused_index]
            what = "USD" if check.unit == "usd" else "token"
            scope, window = _describe(check.key)
            return BudgetExceeded(
                f"The {window} {what} budget of {scope} is used up (or too small for this "
                "request's worst case: lower max_tokens or shorten the prompt).",
                headers={"x-should-retry": "false"},
            )
        if reason == "unavailable":
            return LimitsUnavailable(
                "The gateway cannot reach its limit state; the request was not sent.",
                headers={"retry-after": "1"},
            )
        wait = admission.retry_after_s
        headers = {} if math.isinf(wait) else {"retry-after": str(max(1, math.ceil(wait)))}
        if reason == "concurrency":
            slot = plan.slots[admission.refused_index]
            scope, _ = _describe(slot.key)
            message = f"Too many concurrent requests for {scope} (limit {slot.limit})."
        else:
            rate = plan.rates[admission.refused_index]
            scope, _ = _describe(rate.key)
            unit = "requests" if rate.kind == "requests" else "tokens"
            if math.isinf(wait):
                headers = {"x-should-retry": "false"}
                message = (
                    f"This request needs more {unit} than {scope}'s limit of {rate.limit} "
                    "per minute allows at all."
                )
            else:
                message = f"Rate limit of {rate.limit} {unit} per minute reached for {scope}."
            headers[f"x-ratelimit-limit-{unit}"] = str(rate.limit)
            headers[f"x-ratelimit-remaining-{unit}"] = "0"
            if not math.isinf(wait):
                headers[f"x-ratelimit-reset-{unit}"] = limits.duration(wait)
        return RateLimited(message, headers=headers)

    # --- settlement ------------------------------------------------------------------

    def _bill_unanswered(self, ctx: RequestContext) -> None:
        """The caller left while a provider worked on the request: bill the prompt."""
        if ctx.usage is None and ctx.attempts and ctx.attempts[-1].error_class is None:
            ctx.usage = Usage(prompt_tokens=ctx.prompt_tokens_est or 0)
            ctx.usage_estimated = True

    async def _settle(
        self, ctx: RequestContext, plan: Plan, admission: Admission, rules: _Rules
    ) -> list[int]:
        if not rules.checks.settles:
            return []  # requests per minute only: counted at admission, nothing held
        usage = ctx.usage
        nano = tokens = 0
        if usage is not None or ctx.cache_hit or ctx.lookup_cost_usd:  # (an embedding)
            tokens = (usage.total_tokens if usage is not None else 0) + ctx.lookup_tokens
            cost = self._cost(ctx, usage)
            if cost is not None:
                ctx.cost_usd = cost
                nano = limits.to_nano(cost)
            elif usage is not None and ctx.route is not None:
                # The model that answered has no price (e.g. a dated snapshot only
                # its alias is priced for): bill the route's worst-case rates, the
                # ones reserved, rather than let spend escape the budget.
                worst = rules.facts.prices
                nano = usage.prompt_tokens * worst.input + usage.completion_tokens * worst.output
                nano += limits.to_nano(ctx.lookup_cost_usd)
        used = [nano if q.unit == "usd" else tokens for q in plan.quotas]
        prompt, units = plan.prompt_tokens, admission.units
        rates = tuple(
            (r.key, tokens - r.cost(prompt, units)) for r in plan.rates if r.kind == "tokens"
        )
        settlement = Settlement(
            plan.request_id,
            tuple((q.key, u, q.ends) for q, u in zip(plan.quotas, used)),
            rates,
            tuple(s.key for s in plan.slots),
        )
        await self._store.settle(settlement, time.time())
        gauge = self._metrics.budget_remaining
        # (admission.free is empty when the store could not say: no gauge then)
        for check, free, spent, labels in zip(
            plan.quotas, admission.free, used, rules.checks.labels
        ):
            left = max(0, free - spent)
            gauge.set(labels, left / 1e9 if check.unit == "usd" else float(left))
        return used


def _asked_max_tokens(body: dict[str, Any]) -> int | None:
    for field in ("max_completion_tokens", "max_tokens"):
        value = body.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _reserved(plan: Plan, units: int) -> list[int]:
    return [q.cost(plan.prompt_tokens, units) for q in plan.quotas]


def _describe(counter: str) -> tuple[str, str]:
    """("key 'acme-prod'", "day") from a counter name such as q:k:acme-prod:day:..."""
    parts = counter.split(":")
    kinds = {"k": "key", "p": "project", "r": "key"}
    at = 1
    scope = f"{kinds.get(parts[at], 'scope')} '{parts[at + 1]}'"
    if parts[at] == "r" and len(parts) > at + 2:
        scope += f" on model '{parts[at + 2]}'"
    window = parts[at + 2] if parts[0] == "q" and len(parts) > at + 2 else ""
    return scope, window

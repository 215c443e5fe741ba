"""The in-process limit store: one replica's counters, in dicts.

Admission runs without an ``await`` between reading and writing, so on one event
loop it is atomic by construction. Memory stays bounded: a budget counter goes
an hour after its window ended, a rate counter when it has been idle for two
windows, a concurrency entry when it is empty (swept at most once a minute).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from aigateway import limits
from aigateway.quota import Admission, Plan, RateStatus, Settlement, grant

SWEEP_EVERY_S = 60.0
#: a budget counter outlives its window by this much (late settlements land in it)
WINDOW_GRACE_S = 3600.0


@dataclass(slots=True)
class _Quota:
    ends: float | None
    spent: int = 0
    reserved: int = 0
    #: request id → (amount, lease end)
    holds: dict[str, tuple[int, float]] = field(default_factory=dict)
    next_expiry: float = math.inf

    def expire(self, now: float) -> None:
        if now < self.next_expiry:
            return
        nxt = math.inf
        for rid, (amount, until) in list(self.holds.items()):
            if until <= now:
                del self.holds[rid]
                self.reserved -= amount
            else:
                nxt = min(nxt, until)
        self.next_expiry = nxt


@dataclass(slots=True)
class _Rate:
    index: int
    prev: float = 0.0
    curr: float = 0.0

    def roll(self, now: float) -> None:
        at = limits.window_index(now)
        self.prev, self.curr = limits.rolled(self.index, self.prev, self.curr, at)
        self.index = at


class MemoryStore:
    def __init__(self) -> None:
        self._quotas: dict[str, _Quota] = {}
        self._rates: dict[str, _Rate] = {}
        #: slot key → request id → lease end
        self._slots: dict[str, dict[str, float]] = {}
        #: slot key → earliest lease end among its holders
        self._slot_expiry: dict[str, float] = {}
        self._next_sweep = 0.0

    async def admit(self, plan: Plan, now: float) -> Admission:
        return self.admit_now(plan, now)

    def admit_now(self, plan: Plan, now: float) -> Admission:
        if now >= self._next_sweep:
            self._sweep(now)
        prompt = plan.prompt_tokens
        quotas = [self._quota(q.key, q.ends, now) for q in plan.quotas]
        free = [q.limit - s.spent - s.reserved for q, s in zip(plan.quotas, quotas)]
        reserved = [s.reserved for s in quotas]
        units, refused = grant(plan, free)
        if refused >= 0:
            return Admission(False, free=free, refused="budget", refused_index=refused)
        rates = [self._rate(r.key, now) for r in plan.rates]
        #: each rate's count over the last window with this request in it
        counts: list[float] = []
        for i, (check, rate) in enumerate(zip(plan.rates, rates)):
            cost = check.cost(prompt, units)
            count = limits.sliding_count(rate.prev, rate.curr, now) + cost
            if count > check.limit:
                wait = limits.retry_after_s(rate.prev, rate.curr, cost, check.limit, now)
                return Admission(
                    False, free=free, refused="rate", refused_index=i, retry_after_s=wait
                )
            counts.append(count)
        holders = [self._slot(s.key, now) for s in plan.slots]
        for i, (slot, held) in enumerate(zip(plan.slots, holders)):
            if len(held) >= slot.limit:
                return Admission(
                    False, free=free, refused="concurrency", refused_index=i, retry_after_s=1.0
                )
        # every check passed: apply them all
        until = now + plan.lease_s
        rid = plan.request_id
        for quota, state in zip(plan.quotas, quotas):
            amount = quota.cost(prompt, units)
            state.reserved += amount
            state.holds[rid] = (amount, until)
            if until < state.next_expiry:
                state.next_expiry = until
        statuses = []
        for check, rate, count in zip(plan.rates, rates, counts):
            rate.curr += check.cost(prompt, units)
            statuses.append(
                RateStatus(
                    check.kind,
                    check.limit,
                    max(0, math.floor(check.limit - count)),
                    limits.reset_s(rate.prev, rate.curr, now),
                )
            )
        for slot, held in zip(plan.slots, holders):
            held[rid] = until
            if until < self._slot_expiry.get(slot.key, math.inf):
                self._slot_expiry[slot.key] = until
        return Admission(True, units=units, rates=statuses, free=free, reserved=reserved)

    async def settle(self, settlement: Settlement, now: float) -> None:
        self.settle_now(settlement, now)

    def settle_now(self, settlement: Settlement, now: float) -> None:
        rid = settlement.request_id
        for key, actual, ends in settlement.quotas:
            state = self._quota(key, ends, now)
            hold = state.holds.pop(rid, None)
            if hold is not None:
                state.reserved -= hold[0]
            state.spent += actual
        for key, delta in settlement.rates:
            rate = self._rate(key, now)
            rate.curr = max(0.0, rate.curr + delta)
        for key in settlement.slots:
            held = self._slots.get(key)
            if held is not None:
                held.pop(rid, None)
                if not held:
                    del self._slots[key]
                    self._slot_expiry.pop(key, None)

    async def spent(self, key: str) -> int:
        state = self._quotas.get(key)
        return state.spent if state is not None else 0

    def add_spent(self, key: str, amount: int, ends: float | None, now: float) -> None:
        """Count spend recorded elsewhere (the prompt log, at start-up)."""
        self._quota(key, ends, now).spent += amount

    async def close(self) -> None:
        return None

    def _quota(self, key: str, ends: float | None, now: float) -> _Quota:
        state = self._quotas.get(key)
        if state is None:
            state = self._quotas[key] = _Quota(ends)
        state.expire(now)
        return state

    def _rate(self, key: str, now: float) -> _Rate:
        rate = self._rates.get(key)
        if rate is None:
            rate = self._rates[key] = _Rate(limits.window_index(now))
        rate.roll(now)
        return rate

    def _slot(self, key: str, now: float) -> dict[str, float]:
        held = self._slots.get(key)
        if held is None:
            held = self._slots[key] = {}
        elif len(held) and now >= self._slot_expiry.get(key, math.inf):
            for rid in [rid for rid, until in held.items() if until <= now]:
                del held[rid]
            self._slot_expiry[key] = min(held.values(), default=math.inf)
        return held

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + SWEEP_EVERY_S
        for key, state in list(self._quotas.items()):
            state.expire(now)
            if state.ends is not None and now > state.ends + WINDOW_GRACE_S and not state.holds:
                del self._quotas[key]
        at = limits.window_index(now)
        for key, rate in list(self._rates.items()):
            if rate.index < at - 1:
                del self._rates[key]
        for key, held in list(self._slots.items()):
            for rid, until in list(held.items()):
                if until <= now:
                    del held[rid]
            if not held:
                del self._slots[key]
                self._slot_expiry.pop(key, None)

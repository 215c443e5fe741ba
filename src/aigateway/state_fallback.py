"""What happens when the shared state (Redis) cannot be reached.

Per ``state.on_unavailable`` (defaults in brackets):

- rate limits [``local``]: counted by this replica alone until Redis answers
  again (each replica then allows the full limit); ``allow`` skips them,
  ``deny`` refuses the request.
- budgets [``deny``]: the request is refused with 503 (fail closed: money is not
  spent unchecked); ``allow`` serves it unchecked.

Every failure is counted (``aigateway_state_errors_total``) and logged at most
once per ``LOG_EVERY_S``. A settlement that fails is kept (up to
``PENDING_MAX``, drops counted) and sent again after the next call that
succeeds, so spend is not lost to a short outage. Nothing here blocks longer
than the store's own timeout; recovery needs no action.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace

import structlog

from aigateway.config.model import StateConfig
from aigateway.metrics import Metrics
from aigateway.quota import Admission, LimitStore, Plan, Settlement
from aigateway.state_memory import MemoryStore
from aigateway.state_redis import RedisStore, StoreUnavailable

LOG_EVERY_S = 10.0
PENDING_MAX = 10_000
#: request ids admitted by the local limiter are settled there too
_LOCAL_MAX = 100_000

log = structlog.get_logger("aigateway.state")


class FallbackStore:
    def __init__(
        self,
        primary: LimitStore,
        *,
        rate_limits: str,
        budgets: str,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._primary = primary
        self._local = MemoryStore()
        self._rate_mode = rate_limits
        self._budget_mode = budgets
        self._metrics = metrics
        self._clock = clock
        self._last_log = -LOG_EVERY_S
        self._pending: deque[Settlement] = deque()
        #: settlements for admissions the local limiter made
        self._local_ids: set[str] = set()

    async def admit(self, plan: Plan, now: float) -> Admission:
        try:
            admission = await self._primary.admit(plan, now)
        except StoreUnavailable as exc:
            return self._degraded(plan, now, str(exc))
        if self._pending:
            await self._flush()
        return admission

    def _degraded(self, plan: Plan, now: float, why: str) -> Admission:
        if plan.quotas and self._budget_mode == "deny":
            self._failed("admit", "deny", why)
            return Admission(False, refused="unavailable")
        limited = plan.rates or plan.slots
        if limited and self._rate_mode == "deny":
            self._failed("admit", "deny", why)
            return Admission(False, refused="unavailable")
        if limited and self._rate_mode == "local":
            self._failed("admit", "local", why)
            local = replace(plan, quotas=())
            admission = self._local.admit_now(local, now)
            if admission.admitted and len(self._local_ids) < _LOCAL_MAX:
                self._local_ids.add(plan.request_id)
            return admission
        self._failed("admit", "allow", why)
        return Admission(True, units=plan.max_units)

    async def settle(self, settlement: Settlement, now: float) -> None:
        if settlement.request_id in self._local_ids:
            self._local_ids.discard(settlement.request_id)
            self._local.settle_now(replace(settlement, quotas=()), now)
            settlement = replace(settlement, rates=(), slots=())
            if not settlement.quotas:
                return
        try:
            await self._primary.settle(settlement, now)
        except StoreUnavailable as exc:
            self._failed("settle", "retry_later", str(exc))
            if len(self._pending) >= PENDING_MAX:
                self._pending.popleft()
                self._metrics.state_errors.inc(("settle", "dropped"))
            self._pending.append(settlement)
            return
        if self._pending:
            await self._flush()

    async def _flush(self) -> None:
        while self._pending:
            settlement = self._pending[0]
            try:
                await self._primary.settle(settlement, self._clock())
            except StoreUnavailable:
                return
            self._pending.popleft()

    async def spent(self, key: str) -> int:
        return await self._primary.spent(key)

    async def close(self) -> None:
        if self._pending:
            await self._flush()
        await self._primary.close()

    def _failed(self, operation: str, fallback: str, why: str) -> None:
        self._metrics.state_errors.inc((operation, fallback))
        now = self._clock()
        if now - self._last_log >= LOG_EVERY_S:
            self._last_log = now
            log.warning("state_unavailable", operation=operation, fallback=fallback, error=why)


def open_store(config: StateConfig, metrics: Metrics) -> LimitStore:
    """The store ``state:`` asks for. Redis connects lazily: start-up never waits on it."""
    if config.backend == "memory":
        return MemoryStore()
    assert config.url is not None  # the config model requires it for redis
    primary = RedisStore(
        config.url.get_secret_value(),
        prefix=config.key_prefix,
        timeout_s=config.timeout_s,
        pool_size=config.pool_size,
    )
    return FallbackStore(
        primary,
        rate_limits=config.on_unavailable.rate_limits,
        budgets=config.on_unavailable.budgets,
        metrics=metrics,
    )

"""What a limit store is asked and what it answers (the store protocol).

One admission checks every limit that applies to a request at once, atomically,
and applies all of them or none:

- ``QuotaCheck``: a budget counter (nano-USD or tokens) for one window. The
  request reserves ``fixed + units * per_unit``; settling replaces the
  reservation with what was really spent. A reservation not settled within the
  plan's lease expires (a replica that died does not hold budget forever).
- ``RateCheck``: a per-minute counter (requests or tokens), sliding window.
- ``SlotCheck``: concurrent requests, each holding a leased slot until settled.

``units`` are output tokens: the store grants the most the budgets can pay for,
between ``min_units`` and ``max_units``. When the caller set ``max_tokens`` both
are that number; when it did not, the gateway sends what was granted upstream.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from typing import Literal, Protocol

RateKind = Literal["requests", "tokens"]
QuotaUnit = Literal["usd", "tokens"]
Refusal = Literal["rate", "concurrency", "budget", "unavailable"]


@dataclass(frozen=True, slots=True)
class RateCheck:
    key: str
    limit: int
    fixed: int
    per_unit: int
    kind: RateKind


@dataclass(frozen=True, slots=True)
class SlotCheck:
    key: str
    limit: int


@dataclass(frozen=True, slots=True)
class QuotaCheck:
    key: str
    limit: int
    fixed: int
    per_unit: int
    unit: QuotaUnit
    #: when the window ends (unix s), None for ``total``: the counter may go then
    ends: float | None


@dataclass(frozen=True, slots=True)
class Plan:
    request_id: str
    quotas: tuple[QuotaCheck, ...] = ()
    rates: tuple[RateCheck, ...] = ()
    slots: tuple[SlotCheck, ...] = ()
    _: KW_ONLY
    min_units: int = 0
    max_units: int = 0
    #: reservations and slots not settled by then are given back
    lease_s: float = 3600.0


@dataclass(frozen=True, slots=True)
class RateStatus:
    kind: RateKind
    limit: int
    remaining: int
    reset_s: float


@dataclass(slots=True)
class Admission:
    admitted: bool
    #: output tokens granted (see module doc)
    units: int = 0
    #: per rate check, after this request was counted
    rates: list[RateStatus] = field(default_factory=list)
    #: per quota check: what was free before this request reserved
    free: list[int] = field(default_factory=list)
    #: per quota check: what other requests held reserved when this one was admitted
    reserved: list[int] = field(default_factory=list)
    refused: Refusal | None = None
    #: which check refused (index into the plan's list of that kind)
    refused_index: int = -1
    retry_after_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Settlement:
    request_id: str
    #: (quota key, what was really spent, window end)
    quotas: tuple[tuple[str, int, float | None], ...] = ()
    #: (rate key, real minus reserved): token rates are corrected, never below 0
    rates: tuple[tuple[str, int], ...] = ()
    slots: tuple[str, ...] = ()


class LimitStore(Protocol):
    """Memory (one replica) or Redis (shared). Both behave identically."""

    async def admit(self, plan: Plan, now: float) -> Admission: ...

    async def settle(self, settlement: Settlement, now: float) -> None: ...

    async def spent(self, key: str) -> int:
        """What a quota counter holds as spent (for summaries and tests)."""
        ...

    async def close(self) -> None: ...


def grant(plan: Plan, free: list[int]) -> tuple[int, int]:
    """(output tokens every quota can pay for, -1), or (-1, index of the quota that
    cannot pay for ``min_units``)."""
    units = plan.max_units
    for i, (check, left) in enumerate(zip(plan.quotas, free, strict=True)):
        room = left - check.fixed
        if check.per_unit > 0 and room >= 0:
            room //= check.per_unit
        elif room >= 0:
            continue
        if room < plan.min_units:
            return -1, i
        units = min(units, room)
    return units, -1

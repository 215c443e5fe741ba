"""What a limit store is asked and what it answers (the store protocol).

One admission checks every limit that applies to a request at once, atomically,
and applies all of them or none:

- ``QuotaCheck``: a budget counter (nano-USD or tokens) for one window. The
  request reserves ``fixed + per_prompt * prompt_tokens + per_unit * units``
  (checks are constants of a key, route and window; the plan carries the
  request's prompt tokens and the range of ``units``); settling replaces the
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
    #: the request counts ``fixed + per_prompt * prompt_tokens + per_unit * units``
    fixed: int
    per_unit: int
    kind: RateKind
    per_prompt: int = 0

    def cost(self, prompt_tokens: int, units: int) -> int:
        return self.fixed + self.per_prompt * prompt_tokens + self.per_unit * units


@dataclass(frozen=True, slots=True)
class SlotCheck:
    key: str
    limit: int


@dataclass(frozen=True, slots=True)
class QuotaCheck:
    key: str
    limit: int
    #: the request reserves ``fixed + per_prompt * prompt_tokens + per_unit * units``
    fixed: int
    per_unit: int
    unit: QuotaUnit
    #: when the window ends (unix s), None for ``total``: the counter may go then
    ends: float | None
    per_prompt: int = 0

    def cost(self, prompt_tokens: int, units: int) -> int:
        return self.fixed + self.per_prompt * prompt_tokens + self.per_unit * units


# Checks are built once per key, route and budget window (frozen, shared by
# requests); the classes below are built per request, so their ``__init__``s are
# written out (compiled, a dataclass's generated one stays interpreted and costs
# ~1 µs a call; tests/test_pipeline.py checks each against its fields).


@dataclass(slots=True)
class Plan:
    request_id: str
    quotas: tuple[QuotaCheck, ...] = ()
    rates: tuple[RateCheck, ...] = ()
    slots: tuple[SlotCheck, ...] = ()
    _: KW_ONLY
    #: the prompt's tokens (offline count; 0 when no check counts them)
    prompt_tokens: int = 0
    min_units: int = 0
    max_units: int = 0
    #: reservations and slots not settled by then are given back
    lease_s: float = 3600.0

    def __init__(
        self,
        request_id: str,
        quotas: tuple[QuotaCheck, ...] = (),
        rates: tuple[RateCheck, ...] = (),
        slots: tuple[SlotCheck, ...] = (),
        *,
        prompt_tokens: int = 0,
        min_units: int = 0,
        max_units: int = 0,
        lease_s: float = 3600.0,
    ) -> None:
        self.request_id = request_id
        self.quotas = quotas
        self.rates = rates
        self.slots = slots
        self.prompt_tokens = prompt_tokens
        self.min_units = min_units
        self.max_units = max_units
        self.lease_s = lease_s


@dataclass(slots=True)
class RateStatus:
    kind: RateKind
    limit: int
    remaining: int
    reset_s: float

    def __init__(self, kind: RateKind, limit: int, remaining: int, reset_s: float) -> None:
        self.kind = kind
        self.limit = limit
        self.remaining = remaining
        self.reset_s = reset_s


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

    def __init__(
        self,
        admitted: bool,
        units: int = 0,
        rates: list[RateStatus] | None = None,
        free: list[int] | None = None,
        reserved: list[int] | None = None,
        refused: Refusal | None = None,
        refused_index: int = -1,
        retry_after_s: float = 0.0,
    ) -> None:
        self.admitted = admitted
        self.units = units
        self.rates = [] if rates is None else rates
        self.free = [] if free is None else free
        self.reserved = [] if reserved is None else reserved
        self.refused = refused
        self.refused_index = refused_index
        self.retry_after_s = retry_after_s


@dataclass(slots=True)
class Settlement:
    request_id: str
    #: (quota key, what was really spent, window end)
    quotas: tuple[tuple[str, int, float | None], ...] = ()
    #: (rate key, real minus reserved): token rates are corrected, never below 0
    rates: tuple[tuple[str, int], ...] = ()
    slots: tuple[str, ...] = ()

    def __init__(
        self,
        request_id: str,
        quotas: tuple[tuple[str, int, float | None], ...] = (),
        rates: tuple[tuple[str, int], ...] = (),
        slots: tuple[str, ...] = (),
    ) -> None:
        self.request_id = request_id
        self.quotas = quotas
        self.rates = rates
        self.slots = slots


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
    prompt = plan.prompt_tokens
    for i, (check, left) in enumerate(zip(plan.quotas, free)):
        room = left - check.fixed - check.per_prompt * prompt
        if check.per_unit > 0 and room >= 0:
            room //= check.per_unit
        elif room >= 0:
            continue
        if room < plan.min_units:
            return -1, i
        units = min(units, room)
    return units, -1

"""Rate-limit and budget arithmetic: pure functions of counters and the clock.

Rates (requests and tokens per minute) use a *sliding window counter*: the count
of the current fixed minute plus the previous minute's count weighted by how much
of it still overlaps the last 60 s. It needs two numbers per limit (so Redis does
it in one small script), never lets a burst through at a minute boundary the way
fixed windows do, and holds a limit to within a fraction of a percent.

Budgets use UTC calendar windows: ``day``, ``week`` (ISO, from Monday), ``month``
and ``total`` (never resets). Money is counted in integer nano-dollars
(1e-9 USD), rounded up, so Redis and memory add exactly the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal

RATE_WINDOW_S = 60.0
NANO = Decimal(1_000_000_000)


# --- sliding window counter ------------------------------------------------------------


def window_index(now: float, window_s: float = RATE_WINDOW_S) -> int:
    return int(now // window_s)


def rolled(index: int, prev: float, curr: float, now_index: int) -> tuple[float, float]:
    """(prev, curr) as seen from window ``now_index``, given counts of ``index``."""
    if index == now_index:
        return prev, curr
    if index == now_index - 1:
        return curr, 0.0
    return 0.0, 0.0


def sliding_count(prev: float, curr: float, now: float, window_s: float = RATE_WINDOW_S) -> float:
    """The estimated count over the last ``window_s`` seconds."""
    elapsed = (now % window_s) / window_s
    return prev * (1.0 - elapsed) + curr


def retry_after_s(
    prev: float, curr: float, cost: float, limit: float, now: float, window_s: float = RATE_WINDOW_S
) -> float:
    """Seconds until ``cost`` more fits under ``limit`` (inf if it never can)."""
    if cost > limit:
        return math.inf
    into = now % window_s
    if curr + cost <= limit:
        # only the previous window's share has to decay
        if prev <= 0:
            return 0.0
        at = window_s * (1.0 - (limit - cost - curr) / prev)
        return max(0.0, at - into)
    # wait for the next window, where this window's count decays in turn
    at_next = window_s * (1.0 - (limit - cost) / curr) if curr > 0 else 0.0
    return (window_s - into) + max(0.0, at_next)


def reset_s(prev: float, curr: float, now: float, window_s: float = RATE_WINDOW_S) -> float:
    """Seconds until the counter is back to zero (OpenAI's ``x-ratelimit-reset-*``)."""
    into = now % window_s
    if curr > 0:
        return (window_s - into) + window_s
    if prev > 0:
        return window_s - into
    return 0.0


def duration(seconds: float) -> str:
    """OpenAI's header spelling of a duration: ``"20ms"``, ``"1.5s"``, ``"6m0s"``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    if seconds < 60:
        return f"{math.ceil(seconds * 10) / 10:g}s"
    minutes, rest = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{rest}s"


# --- budget windows --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    #: part of the counter's name: "2026-11-23", "2026-W48", "2026-11", "total"
    id: str
    #: unix seconds when it ends; None for ``total``
    ends: float | None
    #: unix seconds when it began (0 for ``total``)
    starts: float = 0.0


def budget_window(kind: str, now: float) -> Window:
    at = datetime.fromtimestamp(now, UTC)
    day = at.replace(hour=0, minute=0, second=0, microsecond=0)
    if kind == "day":
        return Window(
            day.strftime("%Y-%m-%d"), (day + timedelta(days=1)).timestamp(), day.timestamp()
        )
    if kind == "week":
        start = day - timedelta(days=day.weekday())
        year, week, _ = start.isocalendar()
        return Window(
            f"{year}-W{week:02d}", (start + timedelta(days=7)).timestamp(), start.timestamp()
        )
    if kind == "month":
        start = day.replace(day=1)
        nxt = (start + timedelta(days=32)).replace(day=1)
        return Window(start.strftime("%Y-%m"), nxt.timestamp(), start.timestamp())
    if kind == "total":
        return Window("total", None)
    raise ValueError(f"unknown budget window {kind!r}")


# --- money -----------------------------------------------------------------------------


def to_nano(usd: Decimal) -> int:
    """USD → whole nano-dollars, rounded up (a bill is never rounded down)."""
    return int((usd * NANO).to_integral_value(rounding=ROUND_CEILING))


def from_nano(nano: int) -> Decimal:
    return Decimal(nano) / NANO


def usd_text(nano: int) -> str:
    """Nano-dollars as exact USD text without trailing zeros: "1.5", "0.000000001"."""
    if nano < 0:
        return "-" + usd_text(-nano)
    whole, frac = divmod(nano, 1_000_000_000)
    return f"{whole}.{frac:09d}".rstrip("0") if frac else str(whole)


def nano_per_token(usd_per_mtok: Decimal) -> int:
    """Price of one token in nano-dollars, rounded up: 1 USD/Mtok = 1000."""
    return int((usd_per_mtok * 1000).to_integral_value(rounding=ROUND_CEILING))

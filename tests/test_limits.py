"""Rate-limit and budget arithmetic, table-driven."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from aigateway import limits
from aigateway.quota import Plan, QuotaCheck, grant


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("prev", "curr", "at", "expected"),
    [
        (0, 0, 0.0, 0.0),
        (0, 10, 30.0, 10.0),
        (60, 0, 0.0, 60.0),  # the previous minute counts fully at the boundary
        (60, 0, 30.0, 30.0),  # half of it still overlaps the last 60 s
        (60, 5, 45.0, 20.0),
    ],
)
def test_sliding_count(prev: float, curr: float, at: float, expected: float) -> None:
    assert limits.sliding_count(prev, curr, 600.0 + at) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("index", "now_index", "expected"),
    [(5, 5, (3.0, 4.0)), (4, 5, (4.0, 0.0)), (2, 5, (0.0, 0.0))],
)
def test_rolled(index: int, now_index: int, expected: tuple[float, float]) -> None:
    assert limits.rolled(index, 3.0, 4.0, now_index) == expected


@pytest.mark.parametrize(
    ("prev", "curr", "cost", "limit", "at", "expected"),
    [
        (0, 5, 1, 10, 10.0, 0.0),  # fits now
        (10, 0, 1, 10, 0.0, 6.0),  # prev must decay by one tenth
        (0, 10, 1, 10, 15.0, 45.0 + 6.0),  # next window, then curr decays a tenth
        (0, 0, 11, 10, 0.0, math.inf),  # never fits
    ],
)
def test_retry_after(
    prev: float, curr: float, cost: float, limit: float, at: float, expected: float
) -> None:
    now = 600.0 + at
    wait = limits.retry_after_s(prev, curr, cost, limit, now)
    assert wait == pytest.approx(expected)
    if math.isfinite(wait) and wait > 0:
        # after waiting, it fits (and a moment earlier it did not)
        later = now + wait + 1e-6
        p, c = limits.rolled(limits.window_index(now), prev, curr, limits.window_index(later))
        assert limits.sliding_count(p, c, later) + cost <= limit + 1e-6


@pytest.mark.parametrize(
    ("prev", "curr", "at", "expected"),
    [(0, 0, 10.0, 0.0), (5, 0, 10.0, 50.0), (0, 1, 10.0, 110.0)],
)
def test_reset(prev: float, curr: float, at: float, expected: float) -> None:
    assert limits.reset_s(prev, curr, 600.0 + at) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0, "0ms"), (0.0201, "21ms"), (1.0, "1s"), (1.44, "1.5s"), (59.9, "59.9s"), (360, "6m0s")],
)
def test_duration(seconds: float, text: str) -> None:
    assert limits.duration(seconds) == text


@pytest.mark.parametrize(
    ("kind", "now", "window_id", "ends"),
    [
        ("day", "2026-11-23T21:00:00", "2026-11-23", "2026-11-24T00:00:00"),
        ("week", "2026-11-23T21:00:00", "2026-W48", "2026-11-30T00:00:00"),  # a Monday
        ("week", "2026-11-29T23:59:59", "2026-W48", "2026-11-30T00:00:00"),
        ("month", "2026-12-31T23:59:59", "2026-12", "2027-01-01T00:00:00"),
        ("month", "2027-02-10T00:00:00", "2027-02", "2027-03-01T00:00:00"),
    ],
)
def test_budget_windows_are_utc_calendar(kind: str, now: str, window_id: str, ends: str) -> None:
    window = limits.budget_window(kind, ts(now))
    assert window.id == window_id
    assert window.ends == ts(ends)
    assert window.starts <= ts(now) < window.ends


def test_total_window_never_ends() -> None:
    assert limits.budget_window("total", ts("2026-01-01T00:00:00")) == limits.Window("total", None)


@pytest.mark.parametrize(
    ("usd", "nano"),
    [(Decimal("0.0075"), 7_500_000), (Decimal("1e-10"), 1), (Decimal(0), 0), (Decimal(10), 10**10)],
)
def test_money_in_nano_dollars_rounds_up(usd: Decimal, nano: int) -> None:
    assert limits.to_nano(usd) == nano


@pytest.mark.parametrize(
    ("per_mtok", "nano"), [(Decimal("2.50"), 2500), (Decimal("0.0375"), 38), (Decimal(0), 0)]
)
def test_nano_per_token(per_mtok: Decimal, nano: int) -> None:
    assert limits.nano_per_token(per_mtok) == nano


def _plan(min_units: int, max_units: int, *quotas: tuple[int, int]) -> Plan:
    checks = tuple(
        QuotaCheck(f"q{i}", 10**9, fixed, per, "usd", None) for i, (fixed, per) in enumerate(quotas)
    )
    return Plan("r", checks, min_units=min_units, max_units=max_units)


@pytest.mark.parametrize(
    ("plan", "free", "expected"),
    [
        (_plan(1, 4096, (100, 10)), [100_000], (4096, -1)),  # plenty: the cap
        (_plan(1, 4096, (100, 10)), [1_100], (100, -1)),  # lowered to what is left
        (_plan(1, 4096, (100, 10), (5, 1)), [1_100, 50], (45, -1)),  # the tightest wins
        (_plan(1, 4096, (100, 10)), [105], (-1, 0)),  # not even one token
        (_plan(500, 500, (100, 10)), [4_000], (-1, 0)),  # the caller's max_tokens won't fit
        (_plan(0, 0, (100, 0)), [100], (0, -1)),  # embeddings: the prompt alone
        (_plan(0, 0, (100, 0)), [99], (-1, 0)),
    ],
)
def test_grant(plan: Plan, free: list[int], expected: tuple[int, int]) -> None:
    assert grant(plan, free) == expected

"""A key's limits compiled into checks, and the headers made of an admission; table-driven."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from aigateway import limits
from aigateway.config.model import Budget, RateLimits
from aigateway.policy import (
    Prices,
    Scope,
    Windows,
    budget_left_nano,
    compile_checks,
    rate_headers,
)
from aigateway.quota import Admission, Plan, QuotaCheck, RateCheck, RateStatus, SlotCheck

NOW = datetime(2026, 12, 1, 13, 0, tzinfo=UTC).timestamp()
DAY_ENDS = datetime(2026, 12, 2, tzinfo=UTC).timestamp()
MONTH_ENDS = datetime(2027, 1, 1, tzinfo=UTC).timestamp()
PRICES = Prices(input=2500, output=10_000)  # nano-USD per token: 2.5 / 10 USD per Mtok


def test_checks_of_a_key_and_its_project() -> None:
    key = Scope.of("k:acme-prod", RateLimits(rpm=60), [Budget(window="day", usd=Decimal("5"))])
    project = Scope.of(
        "p:acme",
        RateLimits(rpm=600, tpm=90_000, concurrency=4),
        [Budget(window="month", tokens=1_000_000), Budget(window="total", usd=Decimal(100))],
    )
    checks = compile_checks([key, project], prices=PRICES, windows=Windows(), now=NOW)
    assert checks.quotas == (
        QuotaCheck("q:k:acme-prod:day:2026-12-01:usd", 5 * 10**9, 0, 10_000, "usd", DAY_ENDS, 2500),
        QuotaCheck("q:p:acme:month:2026-12:tokens", 1_000_000, 0, 1, "tokens", MONTH_ENDS, 1),
        QuotaCheck("q:p:acme:total:total:usd", 100 * 10**9, 0, 10_000, "usd", None, 2500),
    )
    assert checks.labels == (
        ("key:acme-prod", "day", "usd"),
        ("project:acme", "month", "tokens"),
        ("project:acme", "total", "usd"),
    )
    assert checks.rates == (
        RateCheck("rpm:k:acme-prod", 60, 1, 0, "requests"),
        RateCheck("rpm:p:acme", 600, 1, 0, "requests"),
        RateCheck("tpm:p:acme", 90_000, 0, 1, "tokens", per_prompt=1),
    )
    assert checks.slots == (SlotCheck("conc:p:acme", 4),)
    assert checks.counts_tokens
    assert checks.until == DAY_ENDS  # the first window to end: then they are built again


@pytest.mark.parametrize(
    ("limits_", "budgets", "settles"),
    [
        (RateLimits(rpm=5), [], False),  # counted at admission, nothing to give back
        (RateLimits(rpm=5, tpm=9), [], True),  # the token count is corrected
        (RateLimits(concurrency=2), [], True),  # the slot is given back
        (None, [Budget(window="day", tokens=9)], True),  # the reservation is replaced
    ],
)
def test_which_checks_leave_something_to_settle(
    limits_: RateLimits | None, budgets: list[Budget], settles: bool
) -> None:
    checks = compile_checks(
        [Scope.of("k:a", limits_, budgets)], prices=PRICES, windows=Windows(), now=NOW
    )
    assert checks.settles is settles


@pytest.mark.parametrize(
    ("scopes", "counts_tokens", "until"),
    [
        ([Scope.of("k:a", RateLimits(rpm=5, concurrency=2), [])], False, math.inf),
        ([Scope.of("k:a", RateLimits(tpm=5), [])], True, math.inf),
        ([Scope.of("k:a", None, [Budget(window="total", tokens=5)])], True, math.inf),
        ([Scope.of("r:a:gpt-4o", RateLimits(rpm=5), [])], False, math.inf),
        ([Scope.of("p:b", None, [Budget(window="month", usd=Decimal(1))])], True, MONTH_ENDS),
    ],
)
def test_what_the_checks_count_and_how_long_they_hold(
    scopes: list[Scope], counts_tokens: bool, until: float
) -> None:
    checks = compile_checks(scopes, prices=PRICES, windows=Windows(), now=NOW)
    assert (checks.counts_tokens, checks.until) == (counts_tokens, until)


def test_a_route_scope_is_labelled_by_its_key() -> None:
    scope = Scope.of("r:acme-prod:gpt-4o", RateLimits(rpm=5), [Budget(window="day", tokens=9)])
    checks = compile_checks([scope], prices=PRICES, windows=Windows(), now=NOW)
    assert checks.labels == (("key:acme-prod", "day", "tokens"),)


def test_a_check_costs_its_fixed_part_the_prompt_and_the_output() -> None:
    check = QuotaCheck("q", 10**9, 7, 10_000, "usd", None, per_prompt=2500)
    assert check.cost(0, 0) == 7
    assert check.cost(12, 40) == 7 + 12 * 2500 + 40 * 10_000
    assert RateCheck("rpm", 5, 1, 0, "requests").cost(1000, 1000) == 1


def status(kind: str, limit: int, remaining: int, reset_s: float = 1.5) -> RateStatus:
    return RateStatus("requests" if kind == "r" else "tokens", limit, remaining, reset_s)


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], {}),
        (
            [status("r", 100, 99, 0.02)],
            {
                "x-ratelimit-limit-requests": "100",
                "x-ratelimit-remaining-requests": "99",
                "x-ratelimit-reset-requests": "20ms",
            },
        ),
        (  # the smallest share left wins, not the smallest number
            [status("r", 1000, 50), status("r", 10, 5), status("t", 100, 1, 90.0)],
            {
                "x-ratelimit-limit-requests": "1000",
                "x-ratelimit-remaining-requests": "50",
                "x-ratelimit-reset-requests": "1.5s",
                "x-ratelimit-limit-tokens": "100",
                "x-ratelimit-remaining-tokens": "1",
                "x-ratelimit-reset-tokens": "1m30s",
            },
        ),
        (  # equal shares: the fewest left; equal in both: the first
            [status("t", 10, 5, 1), status("t", 100, 50, 2), status("t", 10, 5, 3)],
            {
                "x-ratelimit-limit-tokens": "10",
                "x-ratelimit-remaining-tokens": "5",
                "x-ratelimit-reset-tokens": "1s",
            },
        ),
    ],
)
def test_rate_headers_show_the_tightest_limit_of_each_kind(
    statuses: list[RateStatus], expected: dict[str, str]
) -> None:
    assert rate_headers(statuses) == expected
    assert list(rate_headers(statuses)) == list(expected)  # requests first, as OpenAI


USD = QuotaCheck("q:usd", 10**9, 0, 1, "usd", None)
TOKENS = QuotaCheck("q:tokens", 10**6, 0, 1, "tokens", None)


@pytest.mark.parametrize(
    ("quotas", "free", "used", "expected"),
    [
        ((), [], [], None),  # no budget
        ((TOKENS,), [500], [100], None),  # no USD budget
        ((USD, TOKENS, USD), [900, 10, 300], [100, 5, 100], 200),  # the tightest USD one
        ((USD,), [50], [80], 0),  # spent past what was free: nothing left, never negative
        ((USD,), [], [], None),  # the store could not say (Redis down, budgets allowed)
    ],
)
def test_budget_left(
    quotas: tuple[QuotaCheck, ...], free: list[int], used: list[int], expected: int | None
) -> None:
    plan = Plan("r", quotas)
    assert budget_left_nano(plan, Admission(True, free=free), used) == expected


@pytest.mark.parametrize(
    "nano",
    [0, 1, 10, 999_999_999, 10**9, 10**9 + 1, 1_500_000_000, 123_456_789_000, 10**15, 10**21 + 7],
)
def test_usd_text_is_the_exact_decimal(nano: int) -> None:
    exact = format((Decimal(nano) / limits.NANO).normalize(), "f")
    assert limits.usd_text(nano) == exact
    assert limits.usd_text(-nano) == (f"-{exact}" if nano else "0")

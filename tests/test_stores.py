"""The limit stores: memory and a real Redis pass the same tests (they must agree)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from aigateway.metrics import Metrics
from aigateway.quota import LimitStore, Plan, QuotaCheck, RateCheck, Settlement, SlotCheck
from aigateway.state_fallback import FallbackStore
from aigateway.state_memory import MemoryStore
from aigateway.state_redis import RedisStore
from tests.conftest import RedisServer


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[LimitStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    redis = RedisStore(server.url, prefix=f"t-{uuid.uuid4().hex[:8]}", timeout_s=2.0)
    yield redis
    await redis.close()


def quota(limit: int, fixed: int, per: int = 0, key: str = "q:k:a:day:d:usd") -> QuotaCheck:
    return QuotaCheck(key, limit, fixed, per, "usd", None)


async def test_reserve_then_settle_counts_what_was_spent(store: LimitStore) -> None:
    plan = Plan("r1", (quota(1000, 100, 1),), min_units=1, max_units=50)
    admission = await store.admit(plan, time.time())
    assert admission.admitted and admission.units == 50
    assert admission.free == [1000]
    # while r1 holds 150, a second request sees only 850 free
    second = await store.admit(
        Plan("r2", (quota(1000, 0, 1),), min_units=1, max_units=1000), time.time()
    )
    assert second.free == [850] and second.units == 850
    assert second.reserved == [150]  # r1's hold, as the store saw it
    await store.settle(Settlement("r1", (("q:k:a:day:d:usd", 120, None),)), time.time())
    await store.settle(Settlement("r2", (("q:k:a:day:d:usd", 0, None),)), time.time())
    assert await store.spent("q:k:a:day:d:usd") == 120
    third = await store.admit(Plan("r3", (quota(1000, 0),)), time.time())
    assert third.free == [880]


async def test_checks_charge_the_prompt_of_the_plan(store: LimitStore) -> None:
    # checks are shared by requests; each plan brings its prompt: 30 tokens at 2,
    # then what is left at 3 per output token, on the budget and on the token rate
    budget = QuotaCheck("q:k:pp:day:d:usd", 1000, 10, 3, "usd", None, per_prompt=2)
    tpm = RateCheck("tpm:k:pp", 10_000, 0, 1, "tokens", per_prompt=1)
    plan = Plan("r1", (budget,), (tpm,), prompt_tokens=30, min_units=1, max_units=10_000)
    admission = await store.admit(plan, time.time())
    assert admission.admitted and admission.units == (1000 - 10 - 60) // 3 == 310
    assert admission.rates[0].remaining == 10_000 - 30 - 310
    second = await store.admit(Plan("r2", (budget,), prompt_tokens=5, min_units=1), time.time())
    assert second.free == [1000 - (10 + 60 + 3 * 310)]  # r1's whole worst case is held
    assert not second.admitted and second.refused == "budget"  # 0 left, 10 + 5 * 2 + 3 asked
    await store.settle(Settlement("r1", (("q:k:pp:day:d:usd", 100, None),)), time.time())
    third = await store.admit(Plan("r3", (budget,), prompt_tokens=5, max_units=7), time.time())
    assert third.admitted and third.free == [900] and third.units == 7


async def test_admission_is_all_or_nothing(store: LimitStore) -> None:
    rpm = RateCheck("rpm:k:a", 1, 1, 0, "requests")
    assert (await store.admit(Plan("r1", rates=(rpm,)), time.time())).admitted
    refused = await store.admit(Plan("r2", (quota(1000, 400),), (rpm,)), time.time())
    assert not refused.admitted and refused.refused == "rate"
    # the budget check passed but nothing of r2 was kept
    probe = await store.admit(Plan("r3", (quota(1000, 0),)), time.time())
    assert probe.free == [1000]


async def test_concurrent_admissions_never_overshoot(store: LimitStore) -> None:
    plan_for = lambda i: Plan(f"r{i}", (quota(100_000, 1000),))  # noqa: E731 - fits exactly 100
    results = await asyncio.gather(*(store.admit(plan_for(i), time.time()) for i in range(500)))
    admitted = [r for r in results if r.admitted]
    assert len(admitted) == 100
    assert all(r.refused == "budget" for r in results if not r.admitted)


async def test_requests_per_minute_count_down(store: LimitStore) -> None:
    rpm = RateCheck("rpm:k:b", 5, 1, 0, "requests")
    remaining = []
    for i in range(5):
        admission = await store.admit(Plan(f"r{i}", rates=(rpm,)), time.time())
        assert admission.admitted
        remaining.append(admission.rates[0].remaining)
        assert 60 < admission.rates[0].reset_s <= 120
    assert remaining == [4, 3, 2, 1, 0]
    refused = await store.admit(Plan("r9", rates=(rpm,)), time.time())
    assert refused.refused == "rate" and refused.refused_index == 0
    assert 0 < refused.retry_after_s <= 120


async def test_tokens_per_minute_settle_to_real_usage(store: LimitStore) -> None:
    tpm = RateCheck("tpm:k:c", 1000, 100, 1, "tokens")
    first = await store.admit(Plan("r1", rates=(tpm,), min_units=800, max_units=800), time.time())
    assert first.admitted and first.rates[0].remaining == 100
    blocked = await store.admit(Plan("r2", rates=(tpm,), min_units=10, max_units=10), time.time())
    assert blocked.refused == "rate"
    # r1 really used 150 tokens of the 900 reserved
    await store.settle(Settlement("r1", rates=(("tpm:k:c", 150 - 900),)), time.time())
    after = await store.admit(Plan("r3", rates=(tpm,), min_units=10, max_units=10), time.time())
    assert after.admitted and after.rates[0].remaining == 1000 - 150 - 110


async def test_concurrency_slots_are_given_back(store: LimitStore) -> None:
    slot = SlotCheck("conc:k:d", 2)
    assert (await store.admit(Plan("a", slots=(slot,)), time.time())).admitted
    assert (await store.admit(Plan("b", slots=(slot,)), time.time())).admitted
    refused = await store.admit(Plan("c", slots=(slot,)), time.time())
    assert refused.refused == "concurrency"
    await store.settle(Settlement("a", slots=("conc:k:d",)), time.time())
    assert (await store.admit(Plan("c", slots=(slot,)), time.time())).admitted


async def test_stale_reservations_expire(store: LimitStore) -> None:
    plan = Plan("lost", (quota(1000, 900),), slots=(SlotCheck("conc:k:e", 1),), lease_s=0.3)
    assert (await store.admit(plan, time.time())).admitted
    blocked = await store.admit(Plan("next", (quota(1000, 900),)), time.time())
    assert blocked.refused == "budget"
    await asyncio.sleep(0.45)  # the replica holding "lost" died: its lease runs out
    later = Plan("next", (quota(1000, 900),), slots=(SlotCheck("conc:k:e", 1),))
    assert (await store.admit(later, time.time())).admitted


async def test_windows_are_separate_counters(store: LimitStore) -> None:
    day1 = quota(100, 100, key="q:k:f:day:2026-11-23:usd")
    day2 = quota(100, 100, key="q:k:f:day:2026-11-24:usd")
    assert (await store.admit(Plan("a", (day1,)), time.time())).admitted
    await store.settle(Settlement("a", (("q:k:f:day:2026-11-23:usd", 100, None),)), time.time())
    assert (await store.admit(Plan("b", (day1,)), time.time())).refused == "budget"
    assert (await store.admit(Plan("b", (day2,)), time.time())).admitted


async def test_redis_reloads_its_scripts_after_a_flush(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, prefix="t-noscript", timeout_s=2.0)
    try:
        assert (await store.admit(Plan("a", (quota(10, 1),)), time.time())).admitted
        await store._redis.script_flush()  # as after a Redis restart
        assert (await store.admit(Plan("b", (quota(10, 1),)), time.time())).admitted
    finally:
        await store.close()


# --- Redis unreachable -----------------------------------------------------------------


def dead_store(rate_limits: str, budgets: str, metrics: Metrics, port: int) -> FallbackStore:
    redis = RedisStore(f"redis://127.0.0.1:{port}/0", prefix="t", timeout_s=0.2)
    return FallbackStore(redis, rate_limits=rate_limits, budgets=budgets, metrics=metrics)


async def test_unreachable_redis_rate_limits_fall_back_to_local(dead_port: int) -> None:
    metrics = Metrics()
    store = dead_store("local", "deny", metrics, dead_port)
    rpm = RateCheck("rpm:k:a", 2, 1, 0, "requests")
    results = [await store.admit(Plan(f"r{i}", rates=(rpm,)), time.time()) for i in range(3)]
    assert [r.admitted for r in results] == [True, True, False]
    assert metrics.state_errors.values[("admit", "local")] == 3
    await store.close()


@pytest.mark.parametrize(("mode", "admitted"), [("deny", False), ("allow", True)])
async def test_unreachable_redis_budgets_follow_the_configured_mode(
    mode: str, admitted: bool, dead_port: int
) -> None:
    store = dead_store("local", mode, Metrics(), dead_port)
    result = await store.admit(Plan("r", (quota(10, 1),)), time.time())
    assert result.admitted is admitted
    if not admitted:
        assert result.refused == "unavailable"
    await store.close()


async def test_settlements_made_during_an_outage_are_sent_later(
    redis_server: RedisServer, dead_port: int
) -> None:
    metrics = Metrics()
    live = RedisStore(redis_server.url, prefix=f"t-{uuid.uuid4().hex[:8]}", timeout_s=1.0)
    store = FallbackStore(live, rate_limits="local", budgets="deny", metrics=metrics)
    assert (await store.admit(Plan("a", (quota(1000, 10),)), time.time())).admitted
    broken = RedisStore(f"redis://127.0.0.1:{dead_port}/0", prefix="x", timeout_s=0.2)
    store._primary = broken  # the connection goes away
    await store.settle(Settlement("a", (("q:k:a:day:d:usd", 7, None),)), time.time())
    assert metrics.state_errors.values[("settle", "retry_later")] == 1
    store._primary = live  # and comes back: the next call sends what was kept
    assert (await store.admit(Plan("b", (quota(1000, 10),)), time.time())).admitted
    assert await live.spent("q:k:a:day:d:usd") == 7
    await broken.close()
    await store.close()

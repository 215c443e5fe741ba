"""Rate limits and budgets, end to end: real gateway, real fake upstream, the OpenAI SDK."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import aiohttp
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from aigateway import limits
from aigateway.state_memory import WINDOW_GRACE_S
from aigateway.tokens import Tokenizer
from aigateway.web_common import STORE
from tests.conftest import KEY, OTHER_KEY, Gateway, GatewayFactory, RedisServer
from tests.fakes import Reply, chunk_events, completion

# one prompt token costs $0.001, one output token $0.002
PRICED = """
pricing:
  "up/gpt-4o": {input_per_mtok: 1000, output_per_mtok: 2000}
"""
SDK = Callable[..., openai.AsyncOpenAI]
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "hello there, how are you today?"}
]
ACME = "acme: {models: [gpt-4o, with-backup, text-embedding-3-small, mock]"


def limited(project: str = "", key: str = "", state: str = "") -> Callable[[str], str]:
    """Edit the standard test config: limits on project acme and/or key acme-key."""

    def edit(text: str) -> str:
        if project:
            text = text.replace(ACME, f"{ACME}, {project}")
        if key:
            text = text.replace(
                "{id: acme-key, project: acme, ", f"{{id: acme-key, project: acme, {key}, "
            )
        if state:
            text = text.replace("providers:\n", f"state: {state}\nproviders:\n", 1)
        return text

    return edit


@pytest.fixture
async def sdk() -> AsyncIterator[Callable[..., openai.AsyncOpenAI]]:
    """OpenAI SDK clients on a gateway (no SDK retries), closed after the test."""
    made: list[openai.AsyncOpenAI] = []

    def make(gw: Gateway, key: str = KEY) -> openai.AsyncOpenAI:
        made.append(openai.AsyncOpenAI(base_url=gw.url, api_key=key, max_retries=0))
        return made[-1]

    yield make
    for c in made:
        await c.close()


def counted_prompt(tokenizer: Tokenizer) -> int:
    return tokenizer.chat_prompt({"messages": MESSAGES}, ["gpt-4o"])


def budget_key(scope: str, window: str = "day", unit: str = "usd") -> str:
    return f"q:{scope}:{window}:{limits.budget_window(window, time.time()).id}:{unit}"


async def test_requests_per_minute_count_down_then_429(
    make_gateway: GatewayFactory, sdk: SDK
) -> None:
    gw = await make_gateway(edit=limited(key="rate_limits: {rpm: 3}"))
    c = sdk(gw)
    remaining = []
    for _ in range(3):
        raw = await c.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
        remaining.append(raw.headers["x-ratelimit-remaining-requests"])
        assert raw.headers["x-ratelimit-limit-requests"] == "3"
        assert raw.headers["x-ratelimit-reset-requests"].endswith("s")
    assert remaining == ["2", "1", "0"]
    with pytest.raises(openai.RateLimitError) as caught:
        await c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    err = caught.value
    assert err.status_code == 429
    assert err.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
    assert "key 'acme-key'" in err.message
    assert 1 <= int(err.response.headers["retry-after"]) <= 120
    assert err.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert gw.upstream.calls == 3  # the refused request never reached the provider
    # another key is not affected
    other = await sdk(gw, OTHER_KEY).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES
    )
    assert "x-ratelimit-limit-requests" not in other.headers
    assert gw.metrics.limited.values[("acme", "acme-key", "rate")] == 1


async def test_tokens_per_minute_reserve_the_worst_case_then_settle(
    make_gateway: GatewayFactory, sdk: SDK, tokenizer: Tokenizer
) -> None:
    prompt = counted_prompt(tokenizer)
    gw = await make_gateway(edit=limited(project="rate_limits: {tpm: 1000}"))
    c = sdk(gw)
    gw.upstream.script.append(Reply(body=completion(model="gpt-4o", prompt=prompt, completion=5)))
    raw = await c.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, max_tokens=100
    )
    # counted at admission: the prompt and the 100 tokens the caller allowed
    assert raw.headers["x-ratelimit-remaining-tokens"] == str(1000 - prompt - 100)
    raw = await c.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, max_tokens=100
    )
    # the first one was settled to what it used: prompt + 5
    assert raw.headers["x-ratelimit-remaining-tokens"] == str(1000 - 2 * prompt - 5 - 100)
    with pytest.raises(openai.RateLimitError) as caught:
        await c.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=2000)
    assert caught.value.response.headers.get("x-should-retry") == "false"  # can never fit


async def test_concurrency_limit(make_gateway: GatewayFactory, sdk: SDK) -> None:
    gw = await make_gateway(edit=limited(key="rate_limits: {concurrency: 2}"))
    gw.upstream.script += [Reply(body=completion(), delay=0.3) for _ in range(2)]
    c = sdk(gw)
    slow = asyncio.gather(
        *(c.chat.completions.create(model="gpt-4o", messages=MESSAGES) for _ in range(2))
    )
    await asyncio.sleep(0.1)
    with pytest.raises(openai.RateLimitError) as caught:
        await c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert "concurrent" in caught.value.message
    await asyncio.wait_for(slow, 10)
    await c.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # slots given back


async def test_budget_caps_max_tokens_then_refuses_with_insufficient_quota(
    make_gateway: GatewayFactory, sdk: SDK, tokenizer: Tokenizer
) -> None:
    prompt = counted_prompt(tokenizer)
    # room for the prompt and 50 output tokens
    usd = (prompt * 1000 + 50 * 2000) / 1_000_000
    gw = await make_gateway(
        extra=PRICED, edit=limited(project=f"budgets: [{{window: day, usd: {usd}}}]")
    )
    gw.upstream.script.append(Reply(body=completion(model="gpt-4o", prompt=prompt, completion=50)))
    c = sdk(gw)
    raw = await c.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    sent = gw.upstream.seen[-1].body
    assert sent["max_tokens"] == 50  # what the budget could pay for
    assert raw.headers["x-aigateway-budget-remaining-usd"] == "0"
    assert float(raw.headers["x-aigateway-cost-usd"]) == pytest.approx(usd)
    with pytest.raises(openai.RateLimitError) as caught:
        await c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    err = caught.value
    assert err.body["code"] == "insufficient_quota"  # type: ignore[index]
    assert err.body["type"] == "insufficient_quota"  # type: ignore[index]
    assert err.response.headers["x-should-retry"] == "false"
    assert "day USD budget of project 'acme'" in err.message
    assert gw.upstream.calls == 1
    assert gw.metrics.limited.values[("acme", "acme-key", "budget")] == 1
    assert gw.metrics.budget_remaining.values[("project:acme", "day", "usd")] == 0.0
    # at admission the whole budget was reserved for the first request
    assert gw.metrics.budget_reserved.values[("project:acme", "day", "usd")] == pytest.approx(usd)


async def test_a_day_budget_used_up_opens_again_the_next_day(
    make_gateway: GatewayFactory, sdk: SDK, tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A key's checks are built once and kept until a window of theirs ends: the next
    # day's requests must count in the next day's counter, not in yesterday's.
    prompt = counted_prompt(tokenizer)
    usd = (prompt * 1000 + 50 * 2000) / 1_000_000  # one request of 50 output tokens a day
    gw = await make_gateway(
        extra=PRICED, edit=limited(project=f"budgets: [{{window: day, usd: {usd}}}]")
    )
    for _ in range(2):
        gw.upstream.script.append(
            Reply(body=completion(model="gpt-4o", prompt=prompt, completion=50))
        )
    c = sdk(gw)
    await c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    with pytest.raises(openai.RateLimitError):
        await c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    today = budget_key("p:acme")
    real = time.time
    # the next day, past the hour yesterday's counter is kept for (whatever the hour now)
    ends = limits.budget_window("day", real()).ends
    assert ends is not None
    shift = ends + WINDOW_GRACE_S + 60.0 - real()
    monkeypatch.setattr(time, "time", lambda: real() + shift)
    raw = await c.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    assert raw.headers["x-aigateway-budget-remaining-usd"] == "0"
    store = gw.server.app[STORE]
    assert budget_key("p:acme") != today
    cost = limits.to_nano(Decimal(raw.headers["x-aigateway-cost-usd"]))
    assert await store.spent(budget_key("p:acme")) == cost > 0
    assert await store.spent(today) == 0  # yesterday's counter went an hour after its day
    assert gw.upstream.calls == 2


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_500_concurrent_requests_never_overshoot_a_budget_for_100(
    make_gateway: GatewayFactory,
    sdk: SDK,
    tokenizer: Tokenizer,
    backend: str,
    request: pytest.FixtureRequest,
) -> None:
    state = ""
    if backend == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        state = f'{{backend: redis, url: "{server.url}", key_prefix: "b{time.time_ns()}"}}'
    prompt = counted_prompt(tokenizer)
    cost_nano = prompt * 1_000_000 + 2 * 2_000_000  # usage below equals the reservation
    budget_usd = 100 * cost_nano / 1e9
    gw = await make_gateway(
        extra=PRICED,
        edit=limited(project=f"budgets: [{{window: month, usd: {budget_usd}}}]", state=state),
    )
    gw.upstream.by_model["gpt-4o"] = Reply(
        body=completion(model="gpt-4o", prompt=prompt, completion=2)
    )
    c = sdk(gw)

    async def one() -> str:
        try:
            await c.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=2)
        except openai.RateLimitError as exc:
            return str(exc.body["code"])  # type: ignore[index]
        return "ok"

    # The burst goes through aiohttp: the OpenAI SDK's own HTTP pool breaks
    # connections (httpx ReadError) at 500 concurrent calls, with or without us.
    async with aiohttp.ClientSession() as http:

        async def burst_one() -> str:
            async with http.post(
                gw.url + "/chat/completions",
                json={"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 2},
                headers={"authorization": f"Bearer {KEY}"},
            ) as resp:
                body = await resp.json()
                return "ok" if resp.status == 200 else str(body["error"]["code"])

        outcomes = await asyncio.wait_for(asyncio.gather(*(burst_one() for _ in range(500))), 60)
    assert set(outcomes) <= {"ok", "insufficient_quota"}
    ok = outcomes.count("ok")
    assert ok <= 100
    await asyncio.sleep(0.1)  # stream-less settlements are inline; give stragglers a turn
    spent = await gw.server.app[STORE].spent(budget_key("p:acme", "month"))
    assert spent == ok * cost_nano <= 100 * cost_nano
    # no phantom rejections: once everything settled, what is left can still be spent
    extra = 0
    for _ in range(101):
        if await one() != "ok":
            break
        extra += 1
    assert ok + extra == 100
    assert gw.upstream.calls == 100


async def test_a_stream_cut_by_the_caller_is_billed_from_a_local_count(
    make_gateway: GatewayFactory, tokenizer: Tokenizer
) -> None:
    gw = await make_gateway(
        extra=PRICED, edit=limited(project="budgets: [{window: day, tokens: 100000}]")
    )
    gate = asyncio.Event()
    # no role-only first chunk: the caller sees "Hello", then the upstream waits
    events = chunk_events(pieces=("Hello", " there", " friend"))[1:]
    gw.upstream.script.append(Reply(events=events, gate=gate))
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            gw.url + "/chat/completions",
            json={"model": "gpt-4o", "messages": MESSAGES, "stream": True, "max_tokens": 100},
            headers={"authorization": f"Bearer {KEY}"},
        )
        assert resp.status == 200
        first = await asyncio.wait_for(resp.content.readline(), 5)
        assert first.startswith(b"data: ")
        resp.close()  # the caller goes away mid-stream
    gate.set()
    key = budget_key("p:acme", unit="tokens")
    store = gw.server.app[STORE]
    deadline = time.monotonic() + 5
    while await store.spent(key) == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    # billed: the prompt as counted, and the output the caller saw
    assert await store.spent(key) == counted_prompt(tokenizer) + tokenizer.count("Hello", "gpt-4o")
    lines = [json.loads(line) for line in gw.log.getvalue().splitlines() if '"request_id"' in line]
    assert lines[-1]["usage_source"] == "estimated"
    assert lines[-1]["status"] == 499


async def test_keys_without_limits_get_no_limit_headers(
    make_gateway: GatewayFactory, sdk: SDK
) -> None:
    gw = await make_gateway()
    raw = await sdk(gw).chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    assert not [h for h in raw.headers if h.startswith(("x-ratelimit", "x-aigateway-budget"))]


async def test_streamed_and_whole_answers_of_one_exchange_cost_the_same(
    make_gateway: GatewayFactory, sdk: SDK
) -> None:
    gw = await make_gateway(extra=PRICED)
    gw.upstream.script += [
        Reply(body=completion(model="gpt-4o", prompt=10, completion=3)),
        Reply(events=chunk_events(model="gpt-4o", pieces=("a", "b", "c"))),  # 10 in, 3 out
    ]
    c = sdk(gw)
    whole = await c.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    stream = await c.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    usage = [ch.usage async for ch in stream if ch.usage is not None]
    parsed = whole.parse()
    assert parsed.usage is not None and len(usage) == 1
    assert (usage[0].prompt_tokens, usage[0].completion_tokens) == (
        parsed.usage.prompt_tokens,
        parsed.usage.completion_tokens,
    )
    streamed_cost = (usage[0].model_extra or {})["cost"]
    assert streamed_cost == float(whole.headers["x-aigateway-cost-usd"]) == pytest.approx(0.016)


@pytest.mark.parametrize(("budgets", "status"), [("allow", 200), ("deny", 503)])
async def test_unreachable_redis_with_budgets(
    make_gateway: GatewayFactory, sdk: SDK, budgets: str, status: int, dead_port: int
) -> None:
    state = (
        f'{{backend: redis, url: "redis://127.0.0.1:{dead_port}/0", timeout_s: 0.2,'
        f" on_unavailable: {{rate_limits: local, budgets: {budgets}}}}}"
    )
    gw = await make_gateway(
        extra=PRICED,
        edit=limited(
            project="rate_limits: {rpm: 5}, budgets: [{window: day, usd: 1}]", state=state
        ),
    )
    gw.upstream.by_model["gpt-4o"] = Reply(body=completion(model="gpt-4o"))
    c = sdk(gw)
    if status == 200:
        raw = await c.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
        assert raw.headers["x-ratelimit-remaining-requests"] == "4"  # counted locally
        assert "x-aigateway-budget-remaining-usd" not in raw.headers  # unknown
    else:
        with pytest.raises(openai.InternalServerError) as caught:
            await c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert caught.value.status_code == 503
        assert caught.value.body["code"] == "limits_unavailable"  # type: ignore[index]


async def test_a_keys_limit_on_one_route_applies_to_that_route_only(
    make_gateway: GatewayFactory, sdk: SDK
) -> None:
    gw = await make_gateway(edit=limited(key="route_rate_limits: {gpt-4o: {rpm: 1}}"))
    c = sdk(gw)
    raw = await c.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    assert raw.headers["x-ratelimit-limit-requests"] == "1"
    with pytest.raises(openai.RateLimitError):
        await c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    # the same key on another route: no limit applies there, so none is checked
    for _ in range(3):
        other = await c.chat.completions.with_raw_response.create(model="mock", messages=MESSAGES)
        assert "x-ratelimit-limit-requests" not in other.headers
    assert gw.upstream.calls == 1

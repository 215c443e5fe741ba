"""The exact-match response cache, end to end with the OpenAI SDK."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.conftest import KEY, OTHER_KEY, Gateway, GatewayFactory, RedisServer
from tests.fakes import Reply, chunk_events, completion

ROUTE = "gpt-4o: {targets: [{provider: up, model: gpt-4o}]}"
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is 2+2?"}]
PRICED = '\npricing:\n  "up/gpt-4o": {input_per_mtok: 1000, output_per_mtok: 2000}\n'


def cached(
    ttl_s: float = 60, state: str = "", backend: str = "", semantic: str = ""
) -> Callable[[str], str]:
    rule = f"{{ttl_s: {ttl_s}" + (f", semantic: {semantic}" if semantic else "") + "}"

    def edit(text: str) -> str:
        text = text.replace(ROUTE, ROUTE[:-1] + f", cache: {rule}}}")
        if state:
            text = text.replace("providers:\n", f"state: {state}\nproviders:\n", 1)
        if backend:
            text = text.replace("providers:\n", f"cache: {{backend: {backend}}}\nproviders:\n", 1)
        return text

    return edit


def sdk(gw: Gateway, key: str = KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.url, api_key=key, max_retries=0)


async def ask(gw: Gateway, key: str = KEY, **extra: Any) -> Any:
    async with sdk(gw, key) as c:
        return await c.chat.completions.with_raw_response.create(
            model="gpt-4o",
            messages=MESSAGES,
            **extra,
        )


async def test_identical_requests_hit_different_ones_miss(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(extra=PRICED, edit=cached())
    gw.upstream.by_model["gpt-4o"] = Reply(body=completion(model="gpt-4o", text="4"))
    first = await ask(gw)
    await asyncio.sleep(0.05)  # the entry is written in the background
    second = await ask(gw)
    assert first.headers["x-aigateway-cache"] == "miss"
    assert second.headers["x-aigateway-cache"] == "hit"
    assert second.headers["x-aigateway-cost-usd"] == "0"
    assert second.parse().choices[0].message.content == "4"
    assert gw.upstream.calls == 1
    assert (await ask(gw, temperature=0.5)).headers["x-aigateway-cache"] == "miss"
    assert (await ask(gw, OTHER_KEY)).headers["x-aigateway-cache"] == "miss"  # another tenant
    assert (await ask(gw, user="someone")).headers["x-aigateway-cache"] == "hit"  # not in the key
    async with sdk(gw) as c:
        bypass = await c.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES, extra_headers={"x-aigateway-cache": "no-store"}
        )
    assert "x-aigateway-cache" not in bypass.headers
    assert gw.upstream.calls == 4
    m = gw.metrics
    assert m.cache.values[("gpt-4o", "hit")] == 2
    assert m.cache_saved.values[("acme", "gpt-4o")] == pytest.approx(2 * 0.014)
    line = [x for x in gw.log.getvalue().splitlines() if '"request_id"' in x][1]
    assert '"prompt_tokens": null' in line  # a hit uses no tokens


async def test_streams_are_cached_and_served_as_streams(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(edit=cached())
    gw.upstream.script.append(Reply(events=chunk_events(model="gpt-4o", pieces=("Fo", "ur"))))
    texts = []
    async with sdk(gw) as c:
        for _ in range(2):
            stream = await c.chat.completions.create(
                model="gpt-4o", messages=MESSAGES, stream=True,
                stream_options={"include_usage": True},
            )  # fmt: skip
            chunks = [ch async for ch in stream]
            texts.append("".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices))
            await asyncio.sleep(0.05)
        whole = await c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert texts == ["Four", "Four"]
    assert whole.choices[0].message.content == "Four"  # a cached stream answers JSON too
    assert gw.upstream.calls == 1


async def test_entries_expire(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(edit=cached(ttl_s=0.2))
    await ask(gw)
    await asyncio.sleep(0.05)
    assert (await ask(gw)).headers["x-aigateway-cache"] == "hit"
    await asyncio.sleep(0.3)
    assert (await ask(gw)).headers["x-aigateway-cache"] == "miss"
    assert gw.upstream.calls == 2


async def test_redis_backend_is_shared_by_two_gateways(
    make_gateway: GatewayFactory, redis_server: RedisServer
) -> None:
    state = f'{{backend: redis, url: "{redis_server.url}", key_prefix: "c{time.time_ns()}"}}'
    one = await make_gateway(edit=cached(state=state, backend="redis"))
    two = await make_gateway(edit=cached(state=state, backend="redis"))
    assert (await ask(one)).headers["x-aigateway-cache"] == "miss"
    for _ in range(40):  # the entry is written in the background: wait for it, bounded
        hit = await ask(two)
        if hit.headers["x-aigateway-cache"] == "hit":
            break
        await asyncio.sleep(0.05)
    assert hit.headers["x-aigateway-cache"] == "hit"
    assert hit.parse().choices[0].message.content == "Hello!"
    assert one.upstream.calls == 1


async def test_a_projects_cache_covers_its_keys_only(make_gateway: GatewayFactory) -> None:
    project = "acme: {models: [gpt-4o, with-backup, text-embedding-3-small, mock]"
    gw = await make_gateway(
        extra=PRICED, edit=lambda text: text.replace(project, f"{project}, cache: {{ttl_s: 60}}")
    )
    first = await ask(gw)
    await asyncio.sleep(0.05)  # the entry is written in the background
    assert first.headers["x-aigateway-cache"] == "miss"
    assert (await ask(gw)).headers["x-aigateway-cache"] == "hit"
    assert gw.upstream.calls == 1
    for _ in range(2):  # another project on the same route: no cache at all
        assert "x-aigateway-cache" not in (await ask(gw, OTHER_KEY)).headers
    assert gw.upstream.calls == 3

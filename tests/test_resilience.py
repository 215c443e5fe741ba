"""Retries, fallbacks, circuit breaking and timeouts, end to end with exact attempt counts."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from aigateway.config.model import Timeouts
from aigateway.providers.base import UpstreamRequest
from aigateway.upstream import HttpTransport
from tests.conftest import OTHER_KEY, GatewayFactory
from tests.fakes import Reply, chunk_events, error_body

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
FAST_RETRY = """
retry_policies:
  quick: {attempts: 3, initial_backoff_s: 0.01, max_backoff_s: 0.05,
          retry_on: [429, 500, 502, 503, timeout, connect]}
"""


def client(gw) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=gw.url, api_key=OTHER_KEY, max_retries=0, timeout=10)


@pytest.fixture
def gw(make_gateway: GatewayFactory):
    async def build(models: str):
        return await make_gateway(extra=FAST_RETRY, models=models)

    return build


RETRIED = """\
  retried:
    retry: quick
    targets: [{provider: up, model: primary}, {provider: backup, model: secondary}]
  retried-alone:
    retry: quick
    targets: [{provider: up, model: only}]
  guarded:
    circuit_breaker: {failures: 2, window_s: 60, cooldown_s: 60}
    targets: [{provider: up, model: primary}, {provider: backup, model: secondary}]
  impatient:
    targets: [{provider: slow, model: primary}, {provider: backup, model: secondary}]
"""


async def test_retry_on_503_then_success(gw) -> None:
    g = await gw(RETRIED)
    g.upstream.script += [Reply(503, error_body("busy", "server_error"))]
    async with client(g) as c:
        raw = await c.chat.completions.with_raw_response.create(
            model="retried-alone", messages=MESSAGES
        )
    assert raw.headers["x-aigateway-attempts"] == "2"
    assert g.upstream.calls_to("only") == 2


async def test_retries_exhausted_then_fallback(gw) -> None:
    g = await gw(RETRIED)
    g.upstream.by_model["primary"] = Reply(503, error_body("down", "server_error"))
    async with client(g) as c:
        raw = await c.chat.completions.with_raw_response.create(model="retried", messages=MESSAGES)
    assert raw.headers["x-aigateway-provider"] == "backup"
    assert raw.headers["x-aigateway-attempts"] == "4"  # 3 on the primary, 1 on the backup
    assert (g.upstream.calls_to("primary"), g.upstream.calls_to("secondary")) == (3, 1)


async def test_never_retried_client_errors(gw) -> None:
    g = await gw(RETRIED)
    for status in (400, 422):
        g.upstream.script.append(Reply(status, error_body("bad")))
        async with client(g) as c:
            with pytest.raises(openai.APIStatusError) as info:
                await c.chat.completions.create(model="retried", messages=MESSAGES)
        assert info.value.status_code == status
    assert g.upstream.calls == 2


async def test_all_attempts_failing(gw) -> None:
    g = await gw(RETRIED)
    g.upstream.by_model["only"] = Reply(503, error_body("down", "server_error"))
    async with client(g) as c:
        with pytest.raises(openai.InternalServerError) as info:
            await c.chat.completions.create(model="retried-alone", messages=MESSAGES)
    assert info.value.response.headers["x-should-retry"] == "false"
    assert info.value.response.headers["x-aigateway-attempts"] == "3"
    assert g.upstream.calls_to("only") == 3


async def test_retry_after_429_is_retried(gw) -> None:
    g = await gw(RETRIED)
    g.upstream.script.append(
        Reply(429, error_body("slow", "rate_limit_error"), {"retry-after-ms": "20"})
    )
    async with client(g) as c:
        await c.chat.completions.create(model="retried-alone", messages=MESSAGES)
    assert g.upstream.calls_to("only") == 2


async def test_circuit_opens_and_the_broken_target_is_skipped(gw) -> None:
    g = await gw(RETRIED)
    g.upstream.by_model["primary"] = Reply(503, error_body("down", "server_error"))
    async with client(g) as c:
        for _ in range(6):
            raw = await c.chat.completions.with_raw_response.create(
                model="guarded", messages=MESSAGES
            )
            assert raw.headers["x-aigateway-provider"] == "backup"
    # Two failures opened the circuit: the other four requests went straight to the backup.
    assert g.upstream.calls_to("primary") == 2
    assert g.upstream.calls_to("secondary") == 6
    async with aiohttp.ClientSession() as s, s.get(g.root + "/metrics") as r:
        text = await r.text()
    states = {
        tuple(sorted(x.labels.items())): x.value
        for f in text_string_to_metric_families(text)
        for x in f.samples
        if x.name == "aigateway_circuit_state"
    }
    assert states[(("model", "primary"), ("provider", "up"))] == 2.0
    assert states[(("model", "secondary"), ("provider", "backup"))] == 0.0


async def test_slow_first_byte_goes_to_the_next_target(gw) -> None:
    g = await gw(RETRIED)
    g.upstream.by_model["primary"] = Reply(body={}, delay=2)
    async with client(g) as c:
        raw = await c.chat.completions.with_raw_response.create(
            model="impatient", messages=MESSAGES
        )
    assert raw.headers["x-aigateway-provider"] == "backup"
    assert raw.headers["x-aigateway-attempts"] == "2"


async def test_a_stalled_stream_ends_with_an_error_event(gw) -> None:
    g = await gw(RETRIED)
    g.upstream.script.append(Reply(events=chunk_events(), pause=3))  # read_s is 2
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            g.url + "/chat/completions",
            headers={"Authorization": f"Bearer {OTHER_KEY}"},
            json={"model": "gpt-4o", "messages": MESSAGES, "stream": True},
        ) as resp,
    ):
        text = (await asyncio.wait_for(resp.read(), 10)).decode()
    assert "[DONE]" not in text
    assert '"upstream_timeout"' in text.split("\n\n")[-2]


SHAPED = """\
  sized:
    targets:
      - {provider: up, model: small, context_window: 50}
      - {provider: backup, model: medium, context_window: 2000}
      - {provider: backup, model: large, context_window: 100000}
  tiny:
    targets:
      - {provider: up, model: small, context_window: 10}
  moderated:
    targets: [{provider: up, model: strict}]
    content_filter_fallback: {provider: backup, model: lenient}
  capped:
    targets:
      - {provider: up, model: capped, max_tokens: 100, params: {reasoning_effort: low}}
  "vendor/*":
    targets: [{provider: up, model: "*"}]
"""


async def test_a_prompt_too_large_for_a_target_skips_it_before_any_call(gw) -> None:
    g = await gw(SHAPED)
    long: list[ChatCompletionMessageParam] = [{"role": "user", "content": "word " * 400}]
    async with client(g) as c:
        raw = await c.chat.completions.with_raw_response.create(model="sized", messages=long)
        assert raw.headers["x-aigateway-attempts"] == "1"
        with pytest.raises(openai.BadRequestError) as info:
            await c.chat.completions.create(model="tiny", messages=long)
    assert info.value.code == "context_length_exceeded"
    assert [s.body["model"] for s in g.upstream.seen] == ["medium"]


async def test_a_context_length_error_falls_through_to_a_larger_window(gw) -> None:
    g = await gw(SHAPED)
    g.upstream.by_model["medium"] = Reply(
        400,
        error_body(
            "This model's maximum context length is 2000 tokens.", code="context_length_exceeded"
        ),
    )
    async with client(g) as c:
        raw = await c.chat.completions.with_raw_response.create(model="sized", messages=MESSAGES)
    assert [s.body["model"] for s in g.upstream.seen] == ["small"]  # short prompt: fits
    g.upstream.seen.clear()
    g.upstream.by_model["small"] = g.upstream.by_model["medium"]
    async with client(g) as c:
        raw = await c.chat.completions.with_raw_response.create(model="sized", messages=MESSAGES)
    assert raw.headers["x-aigateway-attempts"] == "3"
    assert [s.body["model"] for s in g.upstream.seen] == ["small", "medium", "large"]


@pytest.mark.parametrize(
    "refusal",
    [
        Reply(
            400,
            error_body(
                "The response was filtered due to our content management policy.",
                code="content_filter",
            ),
        ),
        Reply(
            body={
                "id": "x",
                "object": "chat.completion",
                "created": 1,
                "model": "strict",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "content_filter",
                        "message": {"role": "assistant", "content": None},
                    }
                ],
            }
        ),
    ],
    ids=["error", "finish_reason"],
)
async def test_content_filter_falls_back_to_the_configured_target(gw, refusal: Reply) -> None:
    g = await gw(SHAPED)
    g.upstream.by_model["strict"] = refusal
    async with client(g) as c:
        raw = await c.chat.completions.with_raw_response.create(
            model="moderated", messages=MESSAGES
        )
    assert raw.parse().choices[0].message.content == "Hello!"
    assert raw.headers["x-aigateway-provider"] == "backup"
    assert [s.body["model"] for s in g.upstream.seen] == ["strict", "lenient"]


async def test_per_target_params_and_max_tokens_cap(gw) -> None:
    g = await gw(SHAPED)
    async with client(g) as c:
        await c.chat.completions.create(model="capped", messages=MESSAGES, max_tokens=5000)
        await c.chat.completions.create(model="capped", messages=MESSAGES, max_tokens=7)
        await c.chat.completions.create(model="capped", messages=MESSAGES)
    sent = [(s.body.get("max_tokens"), s.body["reasoning_effort"]) for s in g.upstream.seen]
    assert sent == [(100, "low"), (7, "low"), (100, "low")]


async def test_wildcard_route(gw) -> None:
    g = await gw(SHAPED)
    async with client(g) as c:
        raw = await c.chat.completions.with_raw_response.create(
            model="vendor/some-model-v2", messages=MESSAGES
        )
        assert raw.headers["x-aigateway-provider"] == "up"
        with pytest.raises(openai.NotFoundError):
            await c.chat.completions.create(model="vendor/", messages=MESSAGES)
    assert g.upstream.seen[0].body["model"] == "some-model-v2"
    async with aiohttp.ClientSession() as s, s.get(g.root + "/metrics") as r:
        text = await r.text()
    assert 'route="vendor/*"' in text and "some-model-v2" not in text


OUTAGE = """\
  down:
    retry: quick
    circuit_breaker: {enabled: false}
    targets: [{provider: up, model: dead}]
"""


async def test_an_outage_cannot_multiply_upstream_traffic(gw) -> None:
    """Every request would be tried 3 times; the retry budget keeps the upstream
    traffic within 1.2 x requests + 10 (breaker off, so only the budget acts)."""
    g = await gw(OUTAGE)
    g.upstream.by_model["dead"] = Reply(503, error_body("down", "server_error"))
    async with client(g) as c:
        for _ in range(100):
            with pytest.raises(openai.InternalServerError):
                await c.chat.completions.create(model="down", messages=MESSAGES)
    assert 100 < g.upstream.calls_to("dead") <= 1.2 * 100 + 10


async def test_each_providers_timeouts_reach_the_client() -> None:
    """connect_s, read_s and total_s of the provider's settings are what the
    client is given, for every request."""
    seen: list[tuple[float, float, float | None]] = []

    class Client:
        async def request(self, *args: object, connect_s: float, read_s: float,
                          total_s: float | None) -> object:  # fmt: skip
            seen.append((connect_s, read_s, total_s))
            return SimpleNamespace(status=200, headers={})

    transport = HttpTransport(Client())  # type: ignore[arg-type]
    req = UpstreamRequest("POST", "http://127.0.0.1:9/x", {}, b"{}")
    await transport.open(req, Timeouts(read_s=2.0))
    await transport.open(req, Timeouts(connect_s=1.5, read_s=3.0, total_s=9.0))
    assert seen == [(10.0, 2.0, None), (1.5, 3.0, 9.0)]

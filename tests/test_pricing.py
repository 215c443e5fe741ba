"""Pricing: golden costs to 1e-9 from genai-prices and overrides; cost on the wire."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from decimal import Decimal

import aiohttp
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from aigateway.config.model import Price
from aigateway.pricing import PriceBook, PriceTables, may_be_public
from aigateway.usage import Usage
from tests.conftest import KEY, GatewayFactory

OPENAI = "https://api.openai.com/v1"
ANTHROPIC = "https://api.anthropic.com/v1"


#: one set of tables for the module's books (each draws them in a child process)
TABLES = PriceTables()


def book(overrides: dict[str, Price] | None = None, unpriced: list | None = None) -> PriceBook:
    seen = unpriced if unpriced is not None else []
    return PriceBook(
        overrides or {},
        clock=lambda: 0.0,
        on_unpriced=lambda p, m: seen.append((p, m)),
        tables=TABLES,
    )


GOLDEN = [
    # base URL, model, usage (prompt, completion, cached), dollars
    (OPENAI, "gpt-4o", Usage(1000, 500), "0.0075"),
    (OPENAI, "gpt-4o", Usage(1000, 500, cached_tokens=400), "0.0070"),
    (OPENAI, "gpt-4o-2024-08-06", Usage(1000, 500), "0.0075"),  # dated snapshot
    (OPENAI, "gpt-4o", Usage(1000, 500, reasoning_tokens=100), "0.0075"),  # inside output
    (ANTHROPIC, "claude-sonnet-4-5", Usage(1000, 500), "0.0105"),  # tiered, under 200k
    (ANTHROPIC, "claude-sonnet-4-5", Usage(1000, 500, cached_tokens=300), "0.00969"),
    # Anthropic cache creation (write) and read, disjoint from the uncached 500
    (ANTHROPIC, "claude-sonnet-4-5", Usage(1000, 500, 300, 0, 200), "0.00984"),
    # over 200k prompt tokens: the long-context tier, 300,000 x 6 + 10 x 22.5
    (ANTHROPIC, "claude-sonnet-4-5", Usage(300_000, 10), "1.800225"),
    (None, "anything", Usage(1000, 500), "0"),  # the built-in mock is free
]


@pytest.mark.parametrize(("base_url", "model", "usage", "dollars"), GOLDEN)
def test_golden_costs(base_url, model, usage, dollars) -> None:
    cost = book().cost("p", base_url, model, usage)
    assert cost is not None
    assert abs(cost - Decimal(dollars)) < Decimal("1e-9")


def test_overrides_win_provider_and_model_first() -> None:
    prices = {
        "local/llama": Price(input_per_mtok=Decimal("1"), output_per_mtok=Decimal("2")),
        "llama": Price(input_per_mtok=Decimal("100"), output_per_mtok=Decimal("100")),
        "gpt-4o": Price(input_per_mtok=Decimal("0"), output_per_mtok=Decimal("0")),
    }
    b = book(prices)
    assert b.cost("local", "http://127.0.0.1:1/v1", "llama", Usage(1_000_000, 500_000)) == 2
    assert b.cost("other", "http://127.0.0.1:1/v1", "llama", Usage(1_000_000, 0)) == 100
    assert b.cost("openai", OPENAI, "gpt-4o", Usage(1000, 500)) == 0
    cached = Price(
        input_per_mtok=Decimal("2"),
        output_per_mtok=Decimal("8"),
        cached_input_per_mtok=Decimal("0.5"),
    )
    b = book({"m": cached})
    # 600 uncached x 2 + 400 cached x 0.5 + 100 x 8, per million
    assert b.cost("x", None, "m", Usage(1000, 100, cached_tokens=400)) == Decimal("0.0022")


def test_cache_writes_are_their_own_bucket() -> None:
    price = Price(
        input_per_mtok=Decimal("1"),
        output_per_mtok=Decimal("2"),
        cached_input_per_mtok=Decimal("0.5"),
        cache_write_per_mtok=Decimal("1.25"),
    )
    usage = Usage(1000, 100, cached_tokens=400, cache_write_tokens=200)
    assert usage.uncached_input_tokens == 400
    # 400 x 1 + 400 x 0.5 + 200 x 1.25 + 100 x 2, per million
    assert book({"m": price}).cost("x", None, "m", usage) == Decimal("0.00105")


@pytest.mark.parametrize(
    ("base_url", "model", "worst"),
    [
        (OPENAI, "gpt-4o", ("2.5", "10")),
        # tiered: the long-context tier (and the cache write rate) bound the worst case
        (ANTHROPIC, "claude-sonnet-4-5", ("7.5", "22.5")),
    ],
)
def test_worst_case_rates_for_reservations(base_url, model, worst) -> None:
    rates = book().rates("p", base_url, model)
    assert rates is not None
    assert rates.worst_case() == (Decimal(worst[0]), Decimal(worst[1]))


def test_unpriced_is_none_and_reported_once() -> None:
    seen: list = []
    b = book(unpriced=seen)
    for _ in range(3):
        assert b.cost("local", "http://127.0.0.1:11434/v1", "llama3", Usage(10, 10)) is None
    assert seen == [("local", "llama3")]


#: base URLs only a local resolver or no resolver answers: never genai-prices'
LOCAL = [
    "http://127.0.0.1:11434/v1",
    "http://10.0.3.7:8000/v1",
    "https://203.0.113.9/v1",  # any IP address: genai-prices knows host names
    "http://[::1]:8000/v1",
    "http://[fd00::5]/v1",
    "http://localhost:8000/v1",
    "http://LOCALHOST./v1",
    "http://vllm:8000/v1",  # a Compose or Kubernetes service
    "http://vllm.models.svc:8000/v1",
    "http://vllm.models.svc.cluster.local/v1",
    "http://gpu-box.lan/v1",
    "https://llm.corp.internal/v1",
    "http://ollama.home.arpa/v1",
    "http://app.localhost/v1",
    "http://[not-an-address/v1",
    "not a url",
]
PUBLIC = [OPENAI, ANTHROPIC, "https://myres.openai.azure.com/openai", "https://api.groq.com/v1"]


@pytest.mark.parametrize("base_url", LOCAL)
def test_local_base_urls_are_never_looked_up(base_url: str) -> None:
    assert not may_be_public(base_url)
    assert book().rates("local", base_url, "gpt-4o") is None  # unpriced, as genai would say


@pytest.mark.parametrize("base_url", PUBLIC)
def test_public_base_urls_are_looked_up(base_url: str) -> None:
    assert may_be_public(base_url)


def test_no_genai_provider_answers_a_local_base_url() -> None:
    """What the gate skips, genai-prices' own provider lookup would not find either."""
    from genai_prices.data import providers

    for provider in providers:
        for base_url in LOCAL:
            assert not re.match(provider.api_pattern, base_url), (provider.id, base_url)
    assert any(re.match(p.api_pattern, OPENAI) for p in providers)


def test_pricing_a_self_hosted_model_loads_no_price_data() -> None:
    code = (
        "import sys, time; from aigateway.pricing import PriceBook; from aigateway.usage "
        "import Usage; b = PriceBook({}, clock=time.monotonic, on_unpriced=lambda p, m: None); "
        "assert b.cost('vllm', 'http://10.0.0.5:8000/v1', 'llama', Usage(10, 10)) is None; "
        "assert not any(m.split('.')[0] in ('genai_prices', 'httpx2') for m in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
PRICED = """
pricing:
  "up/gpt-4o-2024-08-06": {input_per_mtok: 2.5, output_per_mtok: 10, cached_input_per_mtok: 1.25}
"""


async def test_cost_on_the_wire(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(extra=PRICED)
    async with AsyncOpenAI(base_url=gw.url, api_key=KEY, max_retries=0) as c:
        raw = await c.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
        # 10 prompt tokens x $2.5 + 2 completion tokens x $10, per million
        assert raw.headers["x-aigateway-cost-usd"] == "0.000045"
        assert raw.http_response.json()["usage"]["cost"] == 0.000045
        stream = await c.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
    usage = chunks[-1].usage
    assert usage is not None and usage.model_extra == {"cost": 0.000055}  # 10 x 2.5 + 3 x 10
    async with aiohttp.ClientSession() as s, s.get(gw.root + "/metrics") as r:
        text = await r.text()
    costs = {
        tuple(sorted(x.labels.items())): x.value
        for f in text_string_to_metric_families(text)
        for x in f.samples
        if x.name == "aigateway_cost_usd_total"
    }
    assert costs[(("project", "acme"), ("provider", "up"), ("route", "gpt-4o"))] == pytest.approx(
        0.0001
    )
    log = [json.loads(line) for line in gw.log.getvalue().splitlines()]
    assert [x["cost_usd"] for x in log if x["event"] == "request"] == [0.000045, 0.000055]


async def test_unpriced_model_still_answers(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    async with AsyncOpenAI(base_url=gw.url, api_key=KEY, max_retries=0) as c:
        for _ in range(2):
            raw = await c.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=MESSAGES
            )
            assert "x-aigateway-cost-usd" not in raw.headers
            assert "cost" not in raw.http_response.json()["usage"]
    async with aiohttp.ClientSession() as s, s.get(gw.root + "/metrics") as r:
        text = await r.text()
    assert 'aigateway_unpriced_requests_total{provider="up"} 2.0' in text
    warnings = [line for line in gw.log.getvalue().splitlines() if "has no price" in line]
    assert len(warnings) == 1 and "gpt-4o-2024-08-06" in warnings[0]


@pytest.mark.parametrize(
    "usage_json",
    [
        b'"usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}',
        b'"usage":{"prompt_tokens":10,"completion_tokens":2,"total_tokens":12,"cost":9}',
    ],
    ids=["spliced", "provider cost replaced"],
)
def test_cost_in_the_body_is_valid_json(usage_json: bytes) -> None:
    import asyncio

    from aigateway.config.model import Target
    from aigateway.middleware.account import Account
    from aigateway.pipeline import Attempt, JsonReply, RequestContext

    raw = b'{"id": "x", "choices": [], ' + usage_json + b', "model": "m"}'
    body = json.loads(raw)
    ctx = RequestContext("rid", "chat", {}, read_body=None)  # type: ignore[arg-type]
    ctx.target = Target(provider="p", model="m")
    ctx.attempts.append(Attempt("p", "m"))
    ctx.usage = Usage(10, 2)
    prices = {"m": Price(input_per_mtok=Decimal("1"), output_per_mtok=Decimal("2"))}

    async def upstream(_: RequestContext) -> JsonReply:
        return JsonReply(200, body, raw)

    reply = asyncio.run(Account(book(prices), {"p": None})(ctx, upstream))
    assert isinstance(reply, JsonReply)
    encoded = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
    out = json.loads(encoded)
    assert out["usage"]["cost"] == 0.000014
    assert out["usage"]["prompt_tokens"] == 10 and out["model"] == "m"


GEMINI = "https://generativelanguage.googleapis.com/v1beta"
RAW_GOLDEN = [
    # (provider format, base URL, model, the provider's own usage object, dollars by hand)
    (
        "openai",
        OPENAI,
        "gpt-4o",
        {
            "prompt_tokens": 1000,
            "completion_tokens": 500,
            "total_tokens": 1500,
            "prompt_tokens_details": {"cached_tokens": 400},
            "completion_tokens_details": {"reasoning_tokens": 100},
        },
        "0.00700",  # 600 x 2.50 + 400 x 1.25 + 500 x 10, per million
    ),
    (
        "anthropic",
        ANTHROPIC,
        "claude-sonnet-4-5",
        {
            "input_tokens": 504,
            "cache_creation_input_tokens": 123,
            "cache_read_input_tokens": 1000,
            "output_tokens": 200,
            "output_tokens_details": {"thinking_tokens": 50},
        },
        "0.00527325",  # 504 x 3 + 123 x 3.75 + 1000 x 0.30 + 200 x 15, per million
    ),
    (
        "gemini",
        GEMINI,
        "gemini-2.5-flash",
        {
            "promptTokenCount": 1000,
            "cachedContentTokenCount": 400,
            "candidatesTokenCount": 100,
            "thoughtsTokenCount": 50,
            "totalTokenCount": 1150,
        },
        "0.000567",  # 600 x 0.30 + 400 x 0.03 + (100 + 50 thoughts) x 2.50, per million
    ),
    (
        "gemini",  # a model that counts thoughts inside candidates (total says so)
        GEMINI,
        "gemini-2.5-flash",
        {
            "promptTokenCount": 1000,
            "candidatesTokenCount": 150,
            "thoughtsTokenCount": 50,
            "totalTokenCount": 1150,
        },
        "0.000675",  # 1000 x 0.30 + 150 x 2.50, per million
    ),
]


@pytest.mark.parametrize(("fmt", "base_url", "model", "raw", "dollars"), RAW_GOLDEN)
def test_golden_costs_from_provider_usage_payloads(fmt, base_url, model, raw, dollars) -> None:
    parse = {"openai": Usage.from_openai, "anthropic": Usage.from_anthropic}.get(
        fmt, Usage.from_gemini
    )
    usage = parse(raw)
    assert usage is not None
    cost = book().cost("p", base_url, model, usage)
    assert cost is not None
    assert abs(cost - Decimal(dollars)) < Decimal("1e-9")
    # disjoint buckets add up to the whole prompt
    assert (
        usage.uncached_input_tokens + usage.cached_tokens + usage.cache_write_tokens
        == usage.prompt_tokens
    )


def test_anthropic_usage_normalised() -> None:
    usage = Usage.from_anthropic(
        {
            "input_tokens": 504,
            "cache_creation_input_tokens": 123,
            "cache_read_input_tokens": 1000,
            "output_tokens": 200,
            "output_tokens_details": {"thinking_tokens": 50},
        }
    )
    assert usage == Usage(
        1627, 200, cached_tokens=1000, reasoning_tokens=50, cache_write_tokens=123
    )
    assert usage.to_openai()["prompt_tokens_details"] == {
        "cached_tokens": 1000,
        "cache_write_tokens": 123,
    }
    assert Usage.from_openai(usage.to_openai()) == usage  # round trip
    assert Usage.from_anthropic({"input_tokens": 3}) is None  # no output count: not usage

"""The semantic cache: vector stores (memory and a real Redis) table-driven, then
end to end with the OpenAI SDK against a fake upstream that embeds and answers."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import random
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from aigateway import logread
from aigateway.cache_store import redis_client
from aigateway.config.load import parse_config
from aigateway.errors import ConfigError
from aigateway.metrics import Metrics
from aigateway.promptlog import log_files
from aigateway.semantic_store import MemorySemantic, RedisSemantic, SemanticStore, unit
from tests.conftest import KEY, OTHER_KEY, Gateway, GatewayFactory, RedisServer, gateway_yaml
from tests.fakes import Reply, chunk_events, completion
from tests.test_cache import cached

ROUTE = "gpt-4o: {targets: [{provider: up, model: gpt-4o}]}"
PRICED = (
    "\npricing:\n"
    '  "up/gpt-4o": {input_per_mtok: 1000, output_per_mtok: 2000}\n'
    '  "up/text-embedding-3-small": {input_per_mtok: 100, output_per_mtok: 0}\n'
)
#: what one embedding costs (the fake reports 4 tokens) and one answer (10 in, 2 out)
LOOKUP_USD = 4 * 100 / 1e6
ANSWER_USD = (10 * 1000 + 2 * 2000) / 1e6


def vec(*values: float) -> list[float]:
    return list(values)


def v(*values: float) -> Any:
    found = unit(list(values))
    assert found is not None
    return found


# --- stores ----------------------------------------------------------------------------


async def check_store(store: SemanticStore, expire: Callable[[], Any]) -> None:
    assert await store.nearest("p", v(1, 0, 0)) is None
    await store.add("p", "paris", v(1, 0, 0), 60, 10)
    await store.add("p", "everest", v(0, 1, 0), 60, 10)
    await store.add("q", "other", v(1, 0, 0), 60, 10)
    key, score = await store.nearest("p", v(0.9, 0.1, 0)) or ("", 0.0)
    assert key == "paris" and score == pytest.approx(0.9 / math.hypot(0.9, 0.1), abs=1e-6)
    assert (await store.nearest("p", v(0, 1, 0.01)) or ("",))[0] == "everest"
    assert await store.nearest("p", v(1, 0, 0, 0)) is None  # another size: not compared
    for i in range(12):  # at most 10 per partition: the oldest go first
        await store.add("p", f"k{i}", v(1, i + 1, 0), 60, 10)
    # paris, everest, k0 and k1 are gone
    assert (await store.nearest("p", v(1, 0, 0)) or ("",))[0] == "k2"
    await store.add("short", "brief", v(0, 0, 1), 0.05, 10)
    await expire()
    assert await store.nearest("short", v(0, 0, 1)) is None
    assert (await store.nearest("q", v(1, 0, 0)) or ("",))[0] == "other"


async def test_memory_store() -> None:
    now = [0.0]
    store = MemorySemantic(max_entries=1000, clock=lambda: now[0])

    async def expire() -> None:
        now[0] += 1

    await check_store(store, expire)


async def test_memory_store_is_bounded_in_all() -> None:
    store = MemorySemantic(max_entries=5)
    for i in range(20):
        await store.add(f"p{i}", "k", v(1, 0), 60, 10)
    assert await store.nearest("p0", v(1, 0)) is None  # the least recently used went first
    assert await store.nearest("p19", v(1, 0)) is not None
    assert sum([await store.nearest(f"p{i}", v(1, 0)) is not None for i in range(20)]) == 5


async def test_memory_store_holds_each_vector_once() -> None:
    """After a lookup an entry's vector is its row of the partition's matrix: the
    store holds the vectors once (1536 dimensions: 6 KiB each), not once in the
    entries and again in the matrix, and a rebuilt matrix frees the one before it."""
    import tracemalloc

    rng = random.Random(3)
    rows, dims = 300, 1536
    raw = [[rng.gauss(0, 1) for _ in range(dims)] for _ in range(rows + 20)]
    tracemalloc.start()
    try:
        store = MemorySemantic(max_entries=10_000)
        for i in range(rows):  # the store holds the only reference to each vector
            await store.add("p", f"k{i}", v(*raw[i]), 60, 10_000)
        for i in range(rows, rows + 20):  # a lookup, then an add, 20 times: 20 rebuilds
            assert (await store.nearest("p", v(*raw[0])) or ("",))[0] == "k0"
            await store.add("p", f"k{i}", v(*raw[i]), 60, 10_000)
        assert (await store.nearest("p", v(*raw[rows])) or ("",))[0] == f"k{rows}"
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    one_copy = (rows + 20) * dims * 4
    # one copy of the vectors (the matrix), plus views and keys (~0.5 KiB an entry)
    assert one_copy < held < one_copy * 1.25, (held, one_copy)


@pytest.mark.redis
async def test_redis_store(redis_server: RedisServer) -> None:
    client = redis_client(redis_server.url, 2)
    store = RedisSemantic(client, prefix=f"s{time.time_ns()}", metrics=Metrics())

    async def expire() -> None:
        await asyncio.sleep(0.1)

    try:
        await check_store(store, expire)
    finally:
        await client.aclose()


async def test_redis_down_is_a_miss_and_counted(dead_port: int) -> None:
    metrics = Metrics()
    client = redis_client(f"redis://127.0.0.1:{dead_port}/0", 0.5)  # nothing listens
    store = RedisSemantic(client, prefix="down", metrics=metrics)
    try:
        await store.add("p", "k", v(1, 0), 60, 10)
        assert await store.nearest("p", v(1, 0)) is None
    finally:
        await client.aclose()
    assert metrics.state_errors.values[("semantic_put", "skipped")] == 1
    assert metrics.state_errors.values[("semantic_get", "miss")] == 1


def packed(*values: float) -> str:
    """An embedding as OpenAI sends it for ``encoding_format: base64``."""
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([3, 4], [0.6, 0.8]),
        ([3.0, 4.0, 0.0], [0.6, 0.8, 0.0]),
        (packed(3, 4), [0.6, 0.8]),
        (packed(0.0, -2.0), [0.0, -1.0]),
        ([], None),
        ("", None),
        ([0.0, 0.0], None),
        (packed(0, 0), None),
        ([math.nan, 1.0], None),
        ([math.inf, 1.0], None),
        (packed(math.inf, 1), None),
        (["a", 1.0], None),
        ([[1.0, 2.0]], None),
        ([10**400, 1.0], None),  # JSON allows integers no float holds
        ([{"x": 1}], None),
        ("not base64!", None),
        (base64.b64encode(b"\x00\x00\x80\x3f\x00").decode(), None),  # not whole floats
    ],
)
def test_unit_vectors(values: Any, expected: list[float] | None) -> None:
    found = unit(values)
    if expected is None:
        assert found is None
    else:
        assert isinstance(found, bytes) and len(found) == 4 * len(expected)
        assert list(memoryview(found).cast("f")) == pytest.approx(expected)


def test_base64_is_read_little_endian_on_a_big_endian_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a big-endian host the bytes are swapped into the machine's order. Here
    (little-endian) the same swap turns big-endian input into what this host reads."""
    monkeypatch.setattr(sys, "byteorder", "big")
    found = unit(base64.b64encode(struct.pack(">2f", 3, 4)).decode())
    assert found is not None and list(memoryview(found).cast("f")) == pytest.approx([0.6, 0.8])


async def test_the_nearest_entry_is_the_most_similar_of_many() -> None:
    """Against a brute-force cosine over 300 seeded random vectors of 64 dimensions."""
    rng = random.Random(7)
    rows = [[rng.gauss(0, 1) for _ in range(64)] for _ in range(300)]
    store = MemorySemantic(max_entries=1000)
    for i, row in enumerate(rows):
        await store.add("p", f"k{i}", v(*row), 60, 1000)
    for _ in range(20):
        query = [rng.gauss(0, 1) for _ in range(64)]

        def cosine(row: list[float], query: list[float] = query) -> float:
            return sum(a * b for a, b in zip(row, query, strict=True)) / (
                math.hypot(*row) * math.hypot(*query)
            )

        best = max(range(len(rows)), key=lambda i: cosine(rows[i]))
        key, score = await store.nearest("p", v(*query)) or ("", 0.0)
        assert key == f"k{best}" and score == pytest.approx(cosine(rows[best]), abs=1e-5)


# --- end to end ------------------------------------------------------------------------


def semantic(threshold: float = 0.9, state: str = "", backend: str = "") -> Callable[[str], str]:
    similar = f"{{embeddings: text-embedding-3-small, threshold: {threshold}}}"
    return cached(60, state, backend, semantic=similar)


def logged(tmp_path: Path) -> Callable[[str], str]:
    """A semantic cache and a prompt log."""
    log = f'prompt_log: {{path: "{tmp_path / "p.sqlite"}"}}\n'
    return lambda text: semantic()(text).replace("providers:\n", log + "providers:\n")


def embedding(values: Any) -> Reply:
    return Reply(
        body={
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": values}],
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": 4, "total_tokens": 4},
        }
    )


async def ask(gw: Gateway, text: str, key: str = KEY, **extra: Any) -> Any:
    async with openai.AsyncOpenAI(base_url=gw.url, api_key=key, max_retries=0) as c:
        return await c.chat.completions.with_raw_response.create(
            model="gpt-4o",
            messages=extra.pop("messages", [{"role": "user", "content": text}]),
            **extra,
        )


async def written() -> None:
    await asyncio.sleep(0.05)  # entries are written in the background


async def test_similar_questions_share_an_answer(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await make_gateway(extra=PRICED, edit=logged(tmp_path))
    up = gw.upstream
    up.script += [
        embedding(vec(1, 0, 0)),
        Reply(body=completion(model="gpt-4o", text="Paris.")),
        embedding(vec(0.99, 0.14, 0)),  # close enough
        embedding(vec(0.1, 1, 0)),  # another question
        Reply(body=completion(model="gpt-4o", text="8,849 m.")),
    ]
    first = await ask(gw, "What is the capital of France?")
    await written()
    second = await ask(gw, "what's the capital of france")
    third = await ask(gw, "How tall is Everest?")
    assert first.headers["x-aigateway-cache"] == "miss"
    assert "x-aigateway-cache-similarity" not in first.headers
    assert second.headers["x-aigateway-cache"] == "hit"
    assert float(second.headers["x-aigateway-cache-similarity"]) == pytest.approx(
        0.99 / math.hypot(0.99, 0.14), abs=1e-4
    )
    assert second.parse().choices[0].message.content == "Paris."
    assert third.headers["x-aigateway-cache"] == "miss"
    assert third.parse().choices[0].message.content == "8,849 m."
    assert up.calls_to("gpt-4o") == 2 and up.calls_to("text-embedding-3-small") == 3
    assert up.seen[0].body["input"] == "What is the capital of France?"  # the last message
    assert up.seen[0].body["encoding_format"] == "base64"
    # the lookup is billed with the request: a hit costs the embedding only
    assert float(first.headers["x-aigateway-cost-usd"]) == pytest.approx(ANSWER_USD + LOOKUP_USD)
    assert float(second.headers["x-aigateway-cost-usd"]) == pytest.approx(LOOKUP_USD)
    assert second.parse().usage.model_extra["cost"] == pytest.approx(LOOKUP_USD)
    m = gw.metrics
    assert m.cache.values[("gpt-4o", "semantic_hit")] == 1
    assert m.cache.values[("gpt-4o", "miss")] == 2
    assert m.cache_saved.values[("acme", "gpt-4o")] == pytest.approx(ANSWER_USD)
    await asyncio.sleep(0.1)
    rows = list(logread.rows(log_files(tmp_path / "p.sqlite")))
    assert [r["cache_hit"] for r in rows] == [0, 1, 0]
    assert float(rows[1]["cost_usd"]) == pytest.approx(LOOKUP_USD)
    assert float(rows[0]["cost_usd"]) == pytest.approx(ANSWER_USD + LOOKUP_USD)


async def test_tenants_conversations_and_parameters_are_kept_apart(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(edit=semantic())
    up = gw.upstream
    up.by_model["gpt-4o"] = Reply(body=completion(model="gpt-4o", text="Paris."))
    await ask(gw, "capital of France?")  # the fake embeds everything alike: cosine 1
    await written()
    assert (await ask(gw, "capital of France, please")).headers["x-aigateway-cache"] == "hit"
    misses = [
        await ask(gw, "capital of France?", key=OTHER_KEY),  # another project
        await ask(gw, "capital of France?", temperature=0.2),  # another parameter
        await ask(
            gw,
            "",
            messages=[
                {"role": "system", "content": "Answer in German."},  # another conversation
                {"role": "user", "content": "capital of France?"},
            ],
        ),
    ]
    assert [r.headers["x-aigateway-cache"] for r in misses] == ["miss"] * 3
    assert up.calls_to("gpt-4o") == 4


async def test_below_the_threshold_is_a_miss_and_streams_are_served(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(edit=semantic(threshold=0.95))
    up = gw.upstream
    up.script += [
        embedding(vec(1, 0)),
        Reply(events=chunk_events(model="gpt-4o", pieces=("Pa", "ris."))),
        embedding(vec(1, 0.5)),  # cosine 0.894: below 0.95
        Reply(body=completion(model="gpt-4o", text="Lyon?")),
        embedding(vec(1, 0.1)),  # cosine 0.995
    ]
    async with openai.AsyncOpenAI(base_url=gw.url, api_key=KEY, max_retries=0) as c:
        stream = await c.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "capital?"}], stream=True
        )
        first = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
        await written()
        below = await ask(gw, "biggest city?")
        again = await c.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "capital??"}], stream=True
        )
        replayed = "".join([ch.choices[0].delta.content or "" async for ch in again if ch.choices])
    assert below.headers["x-aigateway-cache"] == "miss"
    assert first == replayed == "Paris."
    assert up.calls_to("gpt-4o") == 2


async def test_embeddings_in_base64_or_numbers_compare_alike(make_gateway: GatewayFactory) -> None:
    # the lookup asks for base64; a server that ignores that and sends numbers is served too
    gw = await make_gateway(edit=semantic(threshold=0.95))
    up = gw.upstream
    up.script += [
        embedding(packed(1, 0, 0)),
        Reply(body=completion(model="gpt-4o", text="Paris.")),
        embedding(vec(0.99, 0.14, 0)),
        embedding(packed(0.98, 0.17, 0)),
    ]
    first = await ask(gw, "What is the capital of France?")
    await written()
    hits = [await ask(gw, "capital of France?"), await ask(gw, "France's capital?")]
    assert first.headers["x-aigateway-cache"] == "miss"
    assert [h.headers["x-aigateway-cache"] for h in hits] == ["hit", "hit"]
    assert float(hits[1].headers["x-aigateway-cache-similarity"]) == pytest.approx(
        0.98 / math.hypot(0.98, 0.17), abs=1e-4
    )
    assert up.calls_to("gpt-4o") == 1
    assert all(s.body["encoding_format"] == "base64" for s in up.seen if "input" in s.body)


@pytest.mark.parametrize(
    "bad", ["%%%", packed(0, 0), [1.0, "x"], [[1.0]], [10**400], {"values": [1.0]}, None]
)
async def test_an_embedding_that_is_not_a_vector_is_a_miss(
    make_gateway: GatewayFactory, bad: Any
) -> None:
    gw = await make_gateway(edit=semantic())
    gw.upstream.script += [
        embedding(bad),
        Reply(body=completion(model="gpt-4o", text="Paris.")),
    ]
    answer = await ask(gw, "capital of France?")
    assert answer.parse().choices[0].message.content == "Paris."
    assert answer.headers["x-aigateway-cache"] == "miss"
    assert gw.metrics.cache.values[("gpt-4o", "semantic_error")] == 1


async def test_a_failed_embedding_is_a_miss(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(edit=semantic())
    gw.upstream.script += [
        Reply(status=500, body={"error": {"message": "down", "type": "server_error"}}),
        Reply(body=completion(model="gpt-4o", text="Paris.")),
    ]
    answer = await ask(gw, "capital of France?")
    assert answer.parse().choices[0].message.content == "Paris."
    assert answer.headers["x-aigateway-cache"] == "miss"
    assert gw.metrics.cache.values[("gpt-4o", "semantic_error")] == 1
    assert "down" not in gw.log.getvalue().split("semantic cache lookup failed")[-1][:200]


async def test_a_failed_answer_still_bills_its_lookup(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await make_gateway(extra=PRICED, edit=logged(tmp_path))
    gw.upstream.script += [
        embedding(vec(1, 0)),
        Reply(status=400, body={"error": {"message": "bad", "type": "invalid_request_error"}}),
    ]
    with pytest.raises(openai.BadRequestError):
        await ask(gw, "capital of France?")
    await asyncio.sleep(0.1)
    rows = list(logread.rows(log_files(tmp_path / "p.sqlite")))
    assert rows[0]["status"] == 400
    assert float(rows[0]["cost_usd"]) == pytest.approx(LOOKUP_USD)  # the embedding was paid
    assert gw.metrics.cost.values[("acme", "gpt-4o", "up")] == pytest.approx(LOOKUP_USD)


async def test_budgets_count_the_lookup(make_gateway: GatewayFactory) -> None:
    budget = "acme: {budgets: [{window: day, usd: 1}], models:"
    gw = await make_gateway(
        extra=PRICED, edit=lambda t: semantic()(t).replace("acme: {models:", budget)
    )
    gw.upstream.by_model["gpt-4o"] = Reply(body=completion(model="gpt-4o", text="Paris."))
    miss = await ask(gw, "capital of France?", max_tokens=10)
    await written()
    hit = await ask(gw, "capital of France!", max_tokens=10)
    assert hit.headers["x-aigateway-cache"] == "hit"
    left = [float(r.headers["x-aigateway-budget-remaining-usd"]) for r in (miss, hit)]
    assert left[0] == pytest.approx(1 - ANSWER_USD - LOOKUP_USD, abs=1e-9)
    assert left[1] == pytest.approx(left[0] - LOOKUP_USD, abs=1e-9)


@pytest.mark.redis
async def test_redis_backend_shares_similar_answers(
    make_gateway: GatewayFactory, redis_server: RedisServer
) -> None:
    state = f'{{backend: redis, url: "{redis_server.url}", key_prefix: "s{time.time_ns()}"}}'
    one = await make_gateway(edit=semantic(state=state, backend="redis"))
    two = await make_gateway(edit=semantic(state=state, backend="redis"))
    one.upstream.by_model["gpt-4o"] = Reply(body=completion(model="gpt-4o", text="Paris."))
    assert (await ask(one, "capital of France?")).headers["x-aigateway-cache"] == "miss"
    for _ in range(40):  # written in the background: wait for it, bounded
        hit = await ask(two, "France: capital?")
        if hit.headers["x-aigateway-cache"] == "hit":
            break
        await asyncio.sleep(0.05)
    assert hit.headers["x-aigateway-cache"] == "hit"
    assert float(hit.headers["x-aigateway-cache-similarity"]) == pytest.approx(1.0)
    assert hit.parse().choices[0].message.content == "Paris."
    assert two.upstream.calls_to("gpt-4o") == 0


@pytest.mark.parametrize(
    ("rule", "error"),
    [
        (
            "{semantic: {embeddings: text-embedding-3-smal}}",
            "models.gpt-4o.cache.semantic.embeddings (line 11): unknown model"
            " 'text-embedding-3-smal'"
            " (did you mean 'text-embedding-3-small'?)",
        ),
        (
            "{semantic: {embeddings: text-embedding-3-small, threshold: 1.5}}",
            "models.gpt-4o.cache.semantic.threshold",
        ),
    ],
)
def test_config_errors_name_the_path(rule: str, error: str) -> None:
    text = gateway_yaml("http://127.0.0.1:9/v1").replace(ROUTE, ROUTE[:-1] + f", cache: {rule}}}")
    with pytest.raises(ConfigError) as caught:
        parse_config(text.encode(), env={}, base_dir=Path("."))
    assert error in str(caught.value)


def test_the_mock_embeds_similar_texts_alike() -> None:
    from aigateway.providers.mock import _vector

    a, b, c = (
        _vector(t, 64)
        for t in ("What is the capital of France?", "what is the capital of france", "Bake a cake")
    )
    assert sum(x * y for x, y in zip(a, b, strict=True)) == pytest.approx(1.0, abs=1e-5)
    assert sum(x * y for x, y in zip(a, c, strict=True)) < 0.5
    assert json.dumps(a)  # plain floats

from __future__ import annotations

import base64
import json
import struct

import pytest

from aigateway.config.model import MockProvider
from aigateway.providers.base import UpstreamRequest
from aigateway.providers.mock import MockEngine, count_tokens
from aigateway.providers.openai import OpenAIAdapter

ADAPTER = OpenAIAdapter("mock://demo", api_key=None)


def engine(**kw) -> MockEngine:
    return MockEngine(MockProvider(type="mock", **kw))


def chat(body: dict, stream: bool = False) -> UpstreamRequest:
    return ADAPTER.chat_request(body, "mock-1", stream=stream, api_key=None)


BODY = {"model": "x", "messages": [{"role": "user", "content": "Hello there, world"}]}


def test_deterministic_response_and_usage() -> None:
    a = engine().plan(chat(BODY), now=1)
    b = engine().plan(chat(BODY), now=1)
    assert a.body == b.body
    parsed = ADAPTER.parse_chat(a.body)
    text = parsed.body["choices"][0]["message"]["content"]
    assert text.endswith("You said: Hello there, world")
    assert parsed.usage is not None
    assert parsed.usage.completion_tokens == count_tokens(text)
    assert parsed.usage.prompt_tokens == 4 + count_tokens("Hello there, world") + 3


@pytest.mark.parametrize("chunks", [1, 3, 8, 50])
def test_stream_matches_non_stream(chunks: int) -> None:
    e = engine(stream_chunks=chunks)
    whole = ADAPTER.parse_chat(e.plan(chat(BODY), now=1).body)
    plan = e.plan(chat({**BODY, "stream": True}, stream=True), now=1)
    dec = ADAPTER.stream_decoder(client_wants_usage=True)
    out = []
    for event in plan.events:
        out += dec.feed(event).all_chunks()
    out += dec.end().all_chunks()
    text = "".join(
        c.data["choices"][0]["delta"].get("content", "") for c in out if c.data["choices"]
    )
    assert text == whole.body["choices"][0]["message"]["content"]
    assert dec.state.usage == whole.usage
    content_chunks = [
        c for c in out if c.data["choices"] and c.data["choices"][0]["delta"].get("content")
    ]
    assert len(content_chunks) == min(chunks, len(text.split()))


def test_max_tokens_truncates_with_length() -> None:
    plan = engine().plan(chat({**BODY, "max_tokens": 3}), now=1)
    data = json.loads(plan.body)
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] == 3


def test_error_rate_is_evenly_spread() -> None:
    e = engine(error_rate=0.25, error_status=502)
    statuses = [e.plan(chat(BODY), now=1).status for _ in range(100)]
    assert statuses.count(502) == 25
    assert statuses[:4].count(502) == 1


def test_forced_status_and_reply() -> None:
    e = engine()
    plan = e.plan(
        chat({"model": "x", "messages": [{"role": "user", "content": "[mock:status=429] hi"}]}),
        now=1,
    )
    assert plan.status == 429 and plan.headers["retry-after"] == "1"
    plan = e.plan(
        chat(
            {"model": "x", "messages": [{"role": "user", "content": "[mock:reply=Exactly this.]"}]}
        ),
        now=1,
    )
    assert json.loads(plan.body)["choices"][0]["message"]["content"] == "Exactly this."


def test_fixed_reply_and_timing() -> None:
    plan = engine(reply="Hi.", latency_ms=20, chunk_delay_ms=5).plan(
        chat({**BODY, "stream": True}, stream=True), now=1
    )
    assert plan.latency_s == 0.02 and plan.chunk_delay_s == 0.005
    assert b"Hi." in b"".join(plan.events)


def test_embeddings_float_and_base64_agree() -> None:
    e = engine(embedding_dimensions=8)
    req = ADAPTER.embeddings_request({"model": "x", "input": ["a", "b"]}, "m", api_key=None)
    floats = json.loads(e.plan(req, now=1).body)
    req64 = ADAPTER.embeddings_request(
        {"model": "x", "input": ["a", "b"], "encoding_format": "base64", "dimensions": 8},
        "m",
        api_key=None,
    )
    b64 = json.loads(e.plan(req64, now=1).body)
    vec = floats["data"][1]["embedding"]
    assert len(vec) == 8
    assert abs(sum(v * v for v in vec) - 1) < 1e-4
    decoded = struct.unpack("<8f", base64.b64decode(b64["data"][1]["embedding"]))
    assert decoded == pytest.approx(vec, abs=1e-6)
    assert floats["data"][0]["embedding"] != vec

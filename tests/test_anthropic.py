"""The Anthropic adapter: translation tables offline, then the OpenAI SDK end to end."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestServer
from openai.types.chat import ChatCompletionToolParam

from aigateway.config.model import AnthropicProvider
from aigateway.errors import InvalidRequest, UpstreamProtocolError, UpstreamStatusError
from aigateway.providers.anthropic import AnthropicAdapter, to_anthropic
from aigateway.providers.base import Chunk
from aigateway.usage import Usage
from tests.conftest import OTHER_KEY, Gateway, GatewayFactory
from tests.fakes import FakeAnthropic, Reply, anthropic_events, anthropic_message

CONFIG = AnthropicProvider(type="anthropic")
SECRET = "sk-ant-SECRET-0123456789abcdef"


def adapter() -> AnthropicAdapter:
    return AnthropicAdapter(CONFIG, api_key=SECRET, clock=lambda: 1700000000.0)


# --- requests --------------------------------------------------------------------------

REQUESTS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "system and developer messages become system; max_tokens defaults",
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "No emoji."}]},
                {"role": "user", "content": "hi"},
            ]
        },
        {
            "system": "Be brief.\n\nNo emoji.",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "max_tokens": 4096,
        },
    ),
    (
        "sampling: temperature clamped, top_p dropped beside it, stop sequences",
        {
            "messages": [{"role": "user", "content": "x"}],
            "temperature": 1.7,
            "top_p": 0.5,
            "max_completion_tokens": 50,
            "stop": ["END", "  "],
            "user": "u-42",
        },
        {
            "temperature": 1.0,
            "max_tokens": 50,
            "stop_sequences": ["END"],
            "metadata": {"user_id": "u-42"},
        },
    ),
    (
        "images: base64 data URLs and http URLs",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                        {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
                    ],
                }
            ]
        },
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {
                            "type": "image",
                            "source": {
                                "type": "base64",
                                "media_type": "image/png",
                                "data": "iVBOR",
                            },
                        },
                        {
                            "type": "image",
                            "source": {"type": "url", "url": "https://example.com/a.jpg"},
                        },
                    ],
                }
            ]
        },
    ),
    (
        "tools, a forced tool choice without parallel calls, a tool round trip",
        {
            "messages": [
                {"role": "user", "content": "weather in Paris and Rome?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                        },
                        {
                            "id": "c2",
                            "type": "function",
                            "function": {"name": "weather", "arguments": '{"city": "Rome"}'},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "18C"},
                {"role": "tool", "tool_call_id": "c2", "content": "24C"},
                {"role": "user", "content": "thanks"},
            ],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "weather",
                        "description": "Weather",
                        "parameters": {
                            "type": "object",
                            "properties": {"city": {"type": "string"}},
                        },
                    },
                }
            ],
            "tool_choice": {"type": "function", "function": {"name": "weather"}},
            "parallel_tool_calls": False,
        },
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "weather in Paris and Rome?"}],
                },
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_use",
                            "id": "c1",
                            "name": "weather",
                            "input": {"city": "Paris"},
                        },
                        {
                            "type": "tool_use",
                            "id": "c2",
                            "name": "weather",
                            "input": {"city": "Rome"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "c1", "content": "18C"},
                        {"type": "tool_result", "tool_use_id": "c2", "content": "24C"},
                        {"type": "text", "text": "thanks"},
                    ],
                },
            ],
            "tools": [
                {
                    "name": "weather",
                    "description": "Weather",
                    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
                }
            ],
            "tool_choice": {"type": "tool", "name": "weather", "disable_parallel_tool_use": True},
        },
    ),
    (
        "tool_choice required, tools without parameters",
        {
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "now"}}],
            "tool_choice": "required",
        },
        {
            "tools": [{"name": "now", "input_schema": {"type": "object", "properties": {}}}],
            "tool_choice": {"type": "any"},
        },
    ),
    (
        "reasoning effort becomes thinking (no temperature with it)",
        {
            "messages": [{"role": "user", "content": "x"}],
            "reasoning_effort": "medium",
            "temperature": 0.2,
            "max_tokens": 1000,
        },
        {"thinking": {"type": "enabled", "budget_tokens": 4096}, "max_tokens": 5120},
    ),
    (
        "JSON schema output",
        {
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "r", "schema": {"type": "object"}},
            },
        },
        {"output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}},
    ),
]


@pytest.mark.parametrize(("case", "body", "expected"), REQUESTS, ids=[r[0] for r in REQUESTS])
def test_request_translation(case: str, body: dict[str, Any], expected: dict[str, Any]) -> None:
    out = to_anthropic(body, "claude-sonnet-4-5", CONFIG)
    assert out["model"] == "claude-sonnet-4-5"
    for key, value in expected.items():
        assert out[key] == value, key
    if "temperature" in expected:
        assert "top_p" not in out
    if "thinking" in expected:
        assert "temperature" not in out


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image_url",
                                "image_url": {"url": "data:image/bmp;base64,Qk0="},
                            }
                        ],
                    }
                ]
            },
            "messages[0].content",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "c",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{oops"},
                            }
                        ],
                    }
                ]
            },
            "messages[0].tool_calls[0].function.arguments",
        ),
    ],
)
def test_requests_anthropic_cannot_take_are_400s(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        to_anthropic(body, "m", CONFIG)
    assert caught.value.param == param


def test_wire_request_headers() -> None:
    req = adapter().chat_request({"messages": []}, "claude-x", stream=True, api_key=None)
    assert req.url == "https://api.anthropic.com/v1/messages"
    assert req.headers["x-api-key"] == SECRET
    assert req.headers["anthropic-version"] == "2023-06-01"
    assert json.loads(req.body)["stream"] is True


# --- responses -------------------------------------------------------------------------


def test_response_with_text_tool_use_thinking_and_cache_usage() -> None:
    message = anthropic_message(
        "Let me check.",
        tool={"id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
        stop="tool_use",
        usage={
            "input_tokens": 10,
            "cache_creation_input_tokens": 20,
            "cache_read_input_tokens": 30,
            "output_tokens": 40,
        },
    )
    message["content"].insert(0, {"type": "thinking", "thinking": "hmm", "signature": "sig"})
    parsed = adapter().parse_chat(json.dumps(message).encode())
    choice = parsed.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    assert choice["message"]["reasoning_content"] == "hmm"
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_1",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
        }
    ]
    assert parsed.usage == Usage(60, 40, cached_tokens=30, cache_write_tokens=20)
    assert parsed.body["usage"]["prompt_tokens"] == 60
    assert parsed.served_model == "claude-sonnet-4-5-20250929"


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("stop_sequence", "stop"),
        ("refusal", "content_filter"),
        ("model_context_window_exceeded", "length"),
        ("new", "stop"),
    ],
)
def test_finish_reasons(stop: str, finish: str) -> None:
    parsed = adapter().parse_chat(json.dumps(anthropic_message(stop=stop)).encode())
    assert parsed.body["choices"][0]["finish_reason"] == finish


def stream_chunks(frames: list[bytes], wants_usage: bool = True) -> tuple[list[dict], Any]:
    decoder = adapter().stream_decoder(client_wants_usage=wants_usage)
    out: list[dict] = []
    data = b"".join(frames)
    for i in range(0, len(data), 37):  # arbitrary read boundaries
        out += [p.data for p in decoder.feed(data[i : i + 37]).parts if isinstance(p, Chunk)]
    out += [p.data for p in decoder.end().parts if isinstance(p, Chunk)]
    return out, decoder.state


def test_stream_translation_text_and_tool_calls() -> None:
    message = anthropic_message(
        "Checking now",
        tool={"id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
        stop="tool_use",
    )
    chunks, state = stream_chunks(anthropic_events(message))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Checking now"
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    ]
    assert calls[0]["id"] == "toolu_1" and calls[0]["index"] == 0
    assert "".join(c["function"]["arguments"] for c in calls) == '{"city": "Paris"}'
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5
    # the stream's usage equals the whole answer's
    assert state.usage == adapter().parse_chat(json.dumps(message).encode()).usage
    assert {c["id"] for c in chunks} == {"msg_01"}


def test_stream_usage_chunk_only_when_asked() -> None:
    chunks, state = stream_chunks(anthropic_events(anthropic_message()), wants_usage=False)
    assert all(c["choices"] for c in chunks) and state.usage is not None


def test_stream_errors() -> None:
    frames = anthropic_events(anthropic_message())[:3]
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    overloaded = b"event: error\ndata: " + json.dumps(error).encode() + b"\n\n"
    decoder = adapter().stream_decoder(client_wants_usage=False)
    decoder.feed(b"".join(frames))
    with pytest.raises(UpstreamStatusError) as caught:
        decoder.feed(overloaded)
    assert caught.value.upstream_status == 529 and caught.value.retryable
    cut = adapter().stream_decoder(client_wants_usage=False)
    cut.feed(b"".join(frames))
    with pytest.raises(UpstreamProtocolError):
        cut.end()  # ended before message_stop


@pytest.mark.parametrize(
    ("status", "kind", "caller_status"),
    [
        (400, "invalid_request_error", 400),
        (529, "overloaded_error", 502),
        (429, "rate_limit_error", 429),
        (401, "authentication_error", 502),
    ],
)
def test_errors(status: int, kind: str, caller_status: int) -> None:
    body = json.dumps({"type": "error", "error": {"type": kind, "message": "nope"}}).encode()
    err = adapter().error(status, {"retry-after": "3"}, body)
    assert err.status == caller_status
    assert err.retryable is (status in (429, 529))
    if caller_status == 400:
        assert err.message == "nope" and err.type == "invalid_request_error"


# --- end to end ------------------------------------------------------------------------


async def anthropic_gateway(
    make_gateway: GatewayFactory,
) -> tuple[Gateway, FakeAnthropic, TestServer]:
    fake = FakeAnthropic()
    server = TestServer(fake.app, host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("/v1"))

    def edit(text: str) -> str:
        provider = (
            f'  claude: {{type: anthropic, base_url: "{url}", api_key: "{SECRET}",'
            " timeouts: {connect_s: 2, read_s: 5}}\n"
        )
        route = (
            "  claude-fast: {targets: [{provider: claude, model: claude-sonnet-4-5}]}\n"
            "  claude-then-up:\n"
            "    targets:\n"
            "      - {provider: claude, model: claude-sonnet-4-5}\n"
            "      - {provider: up, model: gpt-4o}\n"
        )
        text = text.replace("providers:\n", "providers:\n" + provider, 1)
        return text.replace("models:\n", "models:\n" + route, 1)

    return await make_gateway(edit=edit), fake, server


async def test_openai_sdk_through_anthropic(make_gateway: GatewayFactory) -> None:
    gw, fake, server = await anthropic_gateway(make_gateway)
    message = anthropic_message(
        "Sunny",
        tool={"id": "toolu_9", "name": "weather", "input": {"city": "Paris"}},
        stop="tool_use",
    )
    fake.script += [Reply(body=message), Reply(body=message)]
    try:
        async with openai.AsyncOpenAI(base_url=gw.url, api_key=OTHER_KEY, max_retries=0) as c:
            tools: list[ChatCompletionToolParam] = [
                {
                    "type": "function",
                    "function": {
                        "name": "weather",
                        "parameters": {
                            "type": "object",
                            "properties": {"city": {"type": "string"}},
                        },
                    },
                }
            ]
            whole = await c.chat.completions.create(
                model="claude-fast",
                messages=[
                    {"role": "system", "content": "Brief."},
                    {"role": "user", "content": "Paris?"},
                ],
                tools=tools,
            )
            stream = await c.chat.completions.create(
                model="claude-fast",
                messages=[{"role": "user", "content": "Paris?"}],
                tools=tools,
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [ch async for ch in stream]
        seen = fake.seen[0]
        assert seen.path == "/v1/messages"
        assert seen.headers["x-api-key"] == SECRET and seen.headers["anthropic-version"]
        assert seen.body["system"] == "Brief." and seen.body["max_tokens"] == 4096
        assert seen.body["model"] == "claude-sonnet-4-5"
        assert whole.choices[0].finish_reason == "tool_calls"
        calls = whole.choices[0].message.tool_calls
        assert calls is not None and calls[0].type == "function"
        assert calls[0].function.name == "weather"
        assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
        streamed_args = "".join(
            (call.function.arguments or "") if call.function else ""
            for ch in chunks
            if ch.choices
            for call in ch.choices[0].delta.tool_calls or []
        )
        assert json.loads(streamed_args) == {"city": "Paris"}
        usage = [ch.usage for ch in chunks if ch.usage is not None]
        assert whole.usage is not None and usage[0] is not None
        assert (usage[0].prompt_tokens, usage[0].completion_tokens) == (
            whole.usage.prompt_tokens,
            whole.usage.completion_tokens,
        )
        assert SECRET not in gw.log.getvalue()
    finally:
        await server.close()


async def test_anthropic_overloaded_falls_back(make_gateway: GatewayFactory) -> None:
    gw, fake, server = await anthropic_gateway(make_gateway)
    fake.script.append(
        Reply(
            status=529,
            body={"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        )
    )
    try:
        async with openai.AsyncOpenAI(base_url=gw.url, api_key=OTHER_KEY, max_retries=0) as c:
            raw = await c.chat.completions.with_raw_response.create(
                model="claude-then-up", messages=[{"role": "user", "content": "hi"}]
            )
        assert raw.headers["x-aigateway-provider"] == "up"
        assert raw.headers["x-aigateway-attempts"] == "2"
    finally:
        await server.close()

"""The Gemini adapter: translation tables offline, then the OpenAI SDK end to end."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from aigateway.config.model import GeminiProvider
from aigateway.errors import InvalidRequest, UpstreamProtocolError
from aigateway.providers.base import Chunk
from aigateway.providers.gemini import SIGNATURE, GeminiAdapter, to_gemini
from aigateway.usage import Usage
from tests.conftest import OTHER_KEY, GatewayFactory

KEY = "AIza-SECRET-0123456789abcdef0123456789"
CONFIG = GeminiProvider(type="gemini")
USAGE = {"promptTokenCount": 12, "candidatesTokenCount": 4, "thoughtsTokenCount": 3,
         "totalTokenCount": 19, "cachedContentTokenCount": 2}  # fmt: skip


def adapter() -> GeminiAdapter:
    return GeminiAdapter(CONFIG, api_key=KEY, clock=lambda: 1700000000.0)


def response(parts: list[dict[str, Any]], finish: str = "STOP", usage: dict | None = None) -> dict:
    return {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish,
                        "index": 0}],
        "usageMetadata": usage or USAGE,
        "modelVersion": "gemini-2.5-flash",
        "responseId": "r1",
    }  # fmt: skip


# --- requests --------------------------------------------------------------------------


def test_request_translation() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather here?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
            ]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1" + SIGNATURE + "SIGNED", "type": "function",
                 "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "c1" + SIGNATURE + "SIGNED", "content": "18C"},
        ],
        "max_tokens": 100,
        "temperature": 0.3,
        "stop": "END",
        "tools": [{"type": "function", "function": {
            "name": "weather", "parameters": {"type": "object", "properties": {}}}}],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "reasoning_effort": "low",
        "response_format": {"type": "json_object"},
    }  # fmt: skip
    out = to_gemini(body)
    assert out["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert out["contents"][0] == {
        "role": "user",
        "parts": [{"text": "Weather here?"},
                  {"inlineData": {"mimeType": "image/png", "data": "iVBOR"}}],
    }  # fmt: skip
    assert out["contents"][1] == {
        "role": "model",
        "parts": [{"functionCall": {"name": "weather", "args": {"city": "Paris"}, "id": "c1"},
                   "thoughtSignature": "SIGNED"}],
    }  # fmt: skip
    assert out["contents"][2] == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "weather", "response": {"output": "18C"},
                                        "id": "c1"}}],
    }  # fmt: skip
    assert out["generationConfig"] == {
        "temperature": 0.3, "maxOutputTokens": 100, "stopSequences": ["END"],
        "responseMimeType": "application/json", "thinkingConfig": {"thinkingBudget": 1024},
    }  # fmt: skip
    assert out["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"]["type"] == "object"
    assert out["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["weather"]}
    }


def test_image_urls_must_be_inline() -> None:
    part = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    with pytest.raises(InvalidRequest):
        to_gemini({"messages": [{"role": "user", "content": [part]}]})


def test_wire_request() -> None:
    req = adapter().chat_request({"messages": []}, "gemini-2.5-flash", stream=True, api_key=None)
    assert req.url == (
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:"
        "streamGenerateContent?alt=sse"
    )
    assert req.headers["x-goog-api-key"] == KEY and "key=" not in req.url


# --- responses -------------------------------------------------------------------------


def test_response_with_a_signed_function_call_thoughts_and_usage() -> None:
    parts: list[dict[str, Any]] = [
        {"text": "thinking...", "thought": True},
        {"text": "Let me look."},
        {"functionCall": {"name": "weather", "args": {"city": "Paris"}}, "thoughtSignature": "S1"},
    ]
    parsed = adapter().parse_chat(json.dumps(response(parts)).encode())
    choice = parsed.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"  # Gemini says STOP for calls
    assert choice["message"]["content"] == "Let me look."
    assert choice["message"]["reasoning_content"] == "thinking..."
    call = choice["message"]["tool_calls"][0]
    assert call["id"] == "gemini-call-0" + SIGNATURE + "S1"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert parsed.usage == Usage(12, 7, cached_tokens=2, reasoning_tokens=3)
    assert parsed.served_model == "gemini-2.5-flash"


@pytest.mark.parametrize(
    ("finish", "expected"), [("MAX_TOKENS", "length"), ("SAFETY", "content_filter"),
                             ("RECITATION", "content_filter"), ("STOP", "stop")],
)  # fmt: skip
def test_finish_reasons(finish: str, expected: str) -> None:
    parsed = adapter().parse_chat(json.dumps(response([{"text": "x"}], finish)).encode())
    assert parsed.body["choices"][0]["finish_reason"] == expected


def test_a_blocked_prompt_is_a_content_filter_finish() -> None:
    blocked = {
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 5},
    }
    parsed = adapter().parse_chat(json.dumps(blocked).encode())
    assert parsed.body["choices"][0]["finish_reason"] == "content_filter"
    assert parsed.body["choices"][0]["message"]["content"] is None


def sse(events: list[dict]) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\r\n\r\n" for e in events)


def stream_events() -> list[dict]:
    first = response([{"text": "Hel"}], finish="")
    first["candidates"][0].pop("finishReason")
    first.pop("usageMetadata")
    last = response([{"text": "lo"}, {"functionCall": {"name": "f", "args": {"a": 1}}}])
    return [first, last]


def test_stream_translation_and_usage() -> None:
    decoder = adapter().stream_decoder(client_wants_usage=True)
    chunks = [p.data for p in decoder.feed(sse(stream_events())).parts if isinstance(p, Chunk)]
    chunks += [p.data for p in decoder.end().parts if isinstance(p, Chunk)]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello"
    calls = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("tool_calls")]
    assert calls[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "f"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    assert chunks[-1]["usage"]["completion_tokens"] == 7
    whole = adapter().parse_chat(json.dumps(response([{"text": "Hello"}])).encode())
    assert decoder.state.usage == whole.usage  # streamed usage equals the whole answer's


def test_a_stream_cut_before_its_finish_is_an_error() -> None:
    decoder = adapter().stream_decoder(client_wants_usage=False)
    decoder.feed(sse(stream_events()[:1]))
    with pytest.raises(UpstreamProtocolError):
        decoder.end()


@pytest.mark.parametrize(
    ("status", "body", "caller", "kind"),
    [
        (400, {"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}}, 400,
         "invalid_request_error"),
        (429, [{"error": {"code": 429, "message": "slow", "status": "RESOURCE_EXHAUSTED"}}], 429,
         "rate_limit_error"),
        (503, {"error": {"code": 503, "message": "down", "status": "UNAVAILABLE"}}, 502, None),
    ],
)  # fmt: skip
def test_errors(status: int, body: Any, caller: int, kind: str | None) -> None:
    err = adapter().error(status, {}, json.dumps(body).encode())
    assert err.status == caller
    if kind:
        assert err.type == kind


# --- end to end ------------------------------------------------------------------------


async def test_openai_sdk_through_gemini(make_gateway: GatewayFactory) -> None:
    seen: list[tuple[str, dict[str, str], dict]] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        seen.append((request.path_qs, dict(request.headers), body))
        method = request.match_info["method"]
        if method == "batchEmbedContents":
            return web.json_response(
                {"embeddings": [{"values": [0.5, 0.25]} for _ in body["requests"]]}
            )
        turn = len([c for c in body["contents"] if c["role"] == "user"])
        parts = (
            [{"functionCall": {"name": "weather", "args": {"city": "Paris"}},
              "thoughtSignature": "SIG-1"}]
            if turn == 1
            else [{"text": "It is 18C."}]
        )  # fmt: skip
        if method == "generateContent":
            return web.json_response(response(parts))
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(sse([response(parts)]))
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1beta/models/{model}:{method}", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    base = str(server.make_url("/v1beta"))

    def edit(text: str) -> str:
        provider = f'  gem: {{type: gemini, base_url: "{base}", api_key: "{KEY}"}}\n'
        routes = (
            "  flash: {targets: [{provider: gem, model: gemini-2.5-flash}]}\n"
            "  gem-embed: {targets: [{provider: gem, model: text-embedding-004}]}\n"
        )
        text = text.replace("providers:\n", "providers:\n" + provider, 1)
        return text.replace("models:\n", "models:\n" + routes, 1)

    gw = await make_gateway(edit=edit)
    tools: list[ChatCompletionToolParam] = [
        {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
    ]
    try:
        async with openai.AsyncOpenAI(base_url=gw.url, api_key=OTHER_KEY, max_retries=0) as c:
            messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Paris?"}]
            first = await c.chat.completions.create(model="flash", messages=messages, tools=tools)
            calls = first.choices[0].message.tool_calls
            assert calls is not None and calls[0].type == "function"
            messages += [
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": calls[0].id, "type": "function",
                     "function": {"name": "weather", "arguments": calls[0].function.arguments}}]},
                {"role": "tool", "tool_call_id": calls[0].id, "content": "18C"},
            ]  # fmt: skip
            stream = await c.chat.completions.create(
                model="flash", messages=messages, tools=tools, stream=True,
                stream_options={"include_usage": True},
            )  # fmt: skip
            chunks = [ch async for ch in stream]
            vectors = await c.embeddings.create(model="gem-embed", input=["a", "b"])
            # the SDK asked for base64 there (its default) and decoded it; ask for floats too
            floats = await c.embeddings.create(
                model="gem-embed", input="a", encoding_format="float"
            )
        path, headers, _ = seen[0]
        assert path == "/v1beta/models/gemini-2.5-flash:generateContent"
        assert headers["x-goog-api-key"] == KEY
        # the second turn carried Gemini's thought signature back
        path2, _, body2 = seen[1]
        assert path2 == "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        assert body2["contents"][1]["parts"][0]["thoughtSignature"] == "SIG-1"
        assert body2["contents"][2]["parts"][0]["functionResponse"]["name"] == "weather"
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert text == "It is 18C."
        usage = [ch.usage for ch in chunks if ch.usage is not None]
        assert first.usage is not None and usage[0] is not None
        assert usage[0].completion_tokens == first.usage.completion_tokens == 7
        assert [v.embedding for v in vectors.data] == [[0.5, 0.25], [0.5, 0.25]]
        assert floats.data[0].embedding == [0.5, 0.25]
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                gw.url + "/embeddings",
                json={"model": "gem-embed", "input": "a", "encoding_format": "base64"},
                headers={"authorization": f"Bearer {OTHER_KEY}"},
            ) as raw,
        ):
            packed = (await raw.json())["data"][0]["embedding"]
        assert struct.unpack("<2f", base64.b64decode(packed)) == (0.5, 0.25)
        assert KEY not in gw.log.getvalue()
    finally:
        await server.close()

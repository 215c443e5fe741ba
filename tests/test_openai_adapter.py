"""The OpenAI adapter, offline and table-driven, from recorded payloads."""

from __future__ import annotations

import json
import re

import pytest

from aigateway.errors import UpstreamProtocolError, UpstreamStatusError
from aigateway.providers import base
from aigateway.providers.base import StreamState
from aigateway.providers.openai import OpenAIAdapter, openai_error
from aigateway.usage import Usage
from tests.fakes import chunk_events, completion

ADAPTER = OpenAIAdapter("https://api.example.com/v1/", api_key="sk-abc", headers={"x-extra": "1"})
BODY = {"model": "alias", "messages": [{"role": "user", "content": "hi"}], "top_p": 0.5}


def sse(events: list) -> bytes:
    return b"".join(
        b"data: " + (e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n\n"
        for e in events
    )


def test_chat_request() -> None:
    req = ADAPTER.chat_request(BODY, "gpt-4o", stream=False, api_key=None)
    assert req.url == "https://api.example.com/v1/chat/completions"
    assert req.headers["authorization"] == "Bearer sk-abc"
    assert req.headers["x-extra"] == "1"
    assert json.loads(req.body) == {**BODY, "model": "gpt-4o"}
    assert BODY["model"] == "alias", "the caller's body is not mutated"


def test_project_key_overrides_provider_key() -> None:
    req = ADAPTER.chat_request(BODY, "m", stream=False, api_key="sk-project")
    assert req.headers["authorization"] == "Bearer sk-project"


def test_no_key_sends_no_authorization() -> None:
    req = OpenAIAdapter("http://x/v1", api_key=None).chat_request(
        BODY, "m", stream=False, api_key=None
    )
    assert "authorization" not in req.headers


@pytest.mark.parametrize(
    ("client_options", "stream_usage", "sent"),
    [
        (None, True, {"include_usage": True}),
        ({"include_usage": False}, True, {"include_usage": True}),
        (
            {"include_obfuscation": False},
            True,
            {"include_obfuscation": False, "include_usage": True},
        ),
        (None, False, None),
    ],
)
def test_stream_usage_is_requested(client_options, stream_usage, sent) -> None:
    body = {**BODY, "stream": True}
    if client_options is not None:
        body["stream_options"] = client_options
    adapter = OpenAIAdapter("http://x/v1", api_key=None, stream_usage=stream_usage)
    out = json.loads(adapter.chat_request(body, "m", stream=True, api_key=None).body)
    assert out.get("stream_options") == (sent if sent is not None else client_options)


def test_translation_is_idempotent() -> None:
    a = ADAPTER.chat_request({**BODY, "stream": True}, "m", stream=True, api_key=None)
    b = ADAPTER.chat_request({**BODY, "stream": True}, "m", stream=True, api_key=None)
    assert a == b


def test_parse_chat() -> None:
    raw = json.dumps(completion(prompt=100, completion=20, cached=40, reasoning=8)).encode()
    parsed = ADAPTER.parse_chat(raw)
    assert parsed.raw == raw
    assert parsed.served_model == "gpt-4o-2024-08-06"
    assert parsed.usage == Usage(100, 20, 40, 8)


@pytest.mark.parametrize("raw", [b"not json", b"[]", b'{"no": "choices"}', b"[" * 10_000])
def test_parse_chat_rejects_garbage(raw: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        ADAPTER.parse_chat(raw)


@pytest.mark.parametrize("client_wants_usage", [True, False])
@pytest.mark.parametrize("size", [1, 17, 100_000])
def test_stream_decoder(client_wants_usage: bool, size: int) -> None:
    raw = sse(chunk_events())
    dec = ADAPTER.stream_decoder(client_wants_usage=client_wants_usage)
    chunks = []
    for i in range(0, len(raw), size):
        chunks += dec.feed(raw[i : i + size]).all_chunks()
    chunks += dec.end().all_chunks()
    text = "".join(
        c.data["choices"][0]["delta"].get("content", "") for c in chunks if c.data["choices"]
    )
    assert text == "Hello!"
    assert dec.state.usage == Usage(10, 3)
    assert dec.state.served_model == "gpt-4o-2024-08-06"
    assert dec.state.output_chars == 6
    assert len(chunks) == (6 if client_wants_usage else 5)
    assert all(c.raw is not None and json.loads(c.raw) == c.data for c in chunks)


def compact(events: list) -> bytes:
    return b"".join(
        b"data: "
        + (e if isinstance(e, bytes) else json.dumps(e, separators=(",", ":")).encode())
        + b"\n\n"
        for e in events
    )


def relay(raw: bytes, size: int, *, client_wants_usage: bool = False) -> tuple[bytes, StreamState]:
    dec = ADAPTER.stream_decoder(client_wants_usage=client_wants_usage)
    out = b""
    for i in range(0, len(raw), size):
        out += dec.feed(raw[i : i + size]).encode()
    out += dec.end().encode()
    return out, dec.state


@pytest.mark.parametrize("size", [1, 7, 64, 100_000])
@pytest.mark.parametrize("encode", [sse, compact])
def test_relayed_bytes_are_the_upstream_events(size: int, encode) -> None:
    events = chunk_events(pieces=("a", 'say "hi"', "\n", "data: x", "ok"))
    out, state = relay(encode(events), size)
    # Everything but the usage chunk we asked for, and [DONE] (the gateway adds its own).
    assert out == encode(events[:-2])
    assert state.usage == Usage(10, 5)
    # escaped text length: quotes and newlines count as their two-character escapes
    assert state.output_chars == len(json.dumps('asay "hi"\ndata: xok')) - 2


def test_relay_keeps_the_usage_chunk_when_asked() -> None:
    events = chunk_events()
    out, _ = relay(compact(events), 50, client_wants_usage=True)
    assert out == compact(events[:-1])


@pytest.mark.parametrize(
    "stream",
    [
        b'data: {"model":"m","choices":[]}\r\n\r\n: keep-alive\r\n\r\n'
        b'data:{"choices":[{"delta":{"content":"x"}}]}\r\n\r\ndata: [DONE]\r\n\r\n',
        b'data: {"model":"m","choices":[]}\n\nevent: delta\n'
        b'data: {"choices":[{"delta":{"content":"x"}}]}\n\ndata: [DONE]\n\n',
    ],
)
@pytest.mark.parametrize("size", [1, 5, 1000])
def test_unusual_framing_is_parsed_and_reframed(stream: bytes, size: int) -> None:
    out, state = relay(stream, size)
    assert out == (
        b'data: {"model":"m","choices":[]}\n\ndata: {"choices":[{"delta":{"content":"x"}}]}\n\n'
    )
    assert state.served_model == "m"
    assert state.output_chars == 1


@pytest.mark.parametrize("size", [1, 7, 1000])
def test_done_without_its_space_ends_the_stream_and_done_in_text_is_text(size: int) -> None:
    text = b'data: {"model":"m","choices":[{"delta":{"content":"say data: [DONE] now"}}]}\n\n'
    stream = text + b'data: {"choices":[{"delta":{"content":"x"}}]}\n\ndata:[DONE]\n\n'
    out, state = relay(stream + b'data: {"choices":[{"delta":{"content":"late"}}]}\n\n', size)
    assert out == stream[: -len(b"data:[DONE]\n\n")]  # nothing after [DONE]
    assert state.finished and state.served_model == "m"
    assert state.output_chars == len("say data: [DONE] now") + 1


_REST = b'data: {"choices":[{"delta":{"content":"x"}}]}\n\ndata: [DONE]\n\n'


@pytest.mark.parametrize(
    ("first", "model"),
    [
        (b'{"id":"c","model":"m1","choices":[]}', "m1"),
        (b'{"id": "c", "model":  "m1", "choices": []}', "m1"),
        (b'{"id":"{odd","model":"m1","choices":[]}', "m1"),  # a brace in a string
        (b'{"meta":{"model":"inner"},"model":"outer","choices":[]}', "outer"),
        (b'{"choices":[{"delta":{}}],"x":{"model":"inner"}}', None),
        (b'{"model":"a\\"b","choices":[]}', 'a"b'),
        (b'{"model":"\\u00e9","choices":[]}', "\u00e9"),
        (b'{"model":"\xc3\xa9","choices":[]}', "\u00e9"),
        (b'{"model":5,"choices":[]}', None),
        (b'{"model":null,"choices":[]}', None),
        (b'{"choices":[]}', None),
    ],
)
@pytest.mark.parametrize("size", [1, 9, 1000])
def test_served_model_is_the_first_chunks_top_level_model(
    first: bytes, model: str | None, size: int
) -> None:
    stream = b"data: " + first + b"\n\n" + _REST
    out, state = relay(stream, size)
    assert state.served_model == model
    assert out == stream[: -len(b"data: [DONE]\n\n")]


@pytest.mark.parametrize(
    "usage",
    [
        b'"usage":{"prompt_tokens":4,"completion_tokens":1}',
        b'"usage" : {"prompt_tokens":4,"completion_tokens":1}',
        b'"usage":\t{"prompt_tokens":4,"completion_tokens":1}',
        b'"usage":  {"prompt_tokens": 4, "completion_tokens": 1}',
    ],
)
@pytest.mark.parametrize("size", [3, 1000])
def test_usage_is_found_however_it_is_spaced(usage: bytes, size: int) -> None:
    stream = (
        b'data: {"model":"m","choices":[{"delta":{"content":"x"}}],"usage": null}\n\n'
        b'data: {"choices":[],' + usage + b"}\n\ndata: [DONE]\n\n"
    )
    out, state = relay(stream, size)
    assert state.usage == Usage(4, 1)
    assert out == stream.split(b"\n\n")[0] + b"\n\n"  # the usage chunk was ours


def test_error_event_among_plain_chunks_is_raised() -> None:
    events = [*chunk_events()[:3], {"error": {"message": "boom"}}]
    dec = ADAPTER.stream_decoder(client_wants_usage=False)
    with pytest.raises(UpstreamProtocolError, match="boom"):
        dec.feed(compact(events))


def test_oversized_event_is_refused() -> None:
    from aigateway.providers.openai import MAX_EVENT_BYTES

    dec = ADAPTER.stream_decoder(client_wants_usage=False)
    dec.feed(compact(chunk_events()[:1]))
    with pytest.raises(UpstreamProtocolError):
        for _ in range(MAX_EVENT_BYTES // 65536 + 2):
            dec.feed(b"x" * 65536)


def test_stream_cut_before_done_is_an_error() -> None:
    dec = ADAPTER.stream_decoder(client_wants_usage=False)
    dec.feed(sse(chunk_events()[:3]))
    with pytest.raises(UpstreamProtocolError):
        dec.end()


def test_stream_error_event() -> None:
    dec = ADAPTER.stream_decoder(client_wants_usage=False)
    with pytest.raises(UpstreamProtocolError, match="overloaded"):
        dec.feed(sse([{"error": {"message": "overloaded", "type": "server_error"}}]))


def test_stream_without_usage_leaves_usage_unknown() -> None:
    dec = ADAPTER.stream_decoder(client_wants_usage=False)
    dec.feed(sse(chunk_events(include_usage=False)))
    dec.end()
    assert dec.state.usage is None
    assert dec.state.output_chars == 6


@pytest.mark.parametrize(
    ("status", "body", "headers", "caller_status", "code", "retryable"),
    [
        (
            400,
            {
                "error": {
                    "message": "bad",
                    "type": "invalid_request_error",
                    "param": "x",
                    "code": "c",
                }
            },
            {},
            400,
            "c",
            False,
        ),
        (404, {"error": {"message": "no model"}}, {}, 404, None, False),
        (429, {"error": {"message": "slow"}}, {"retry-after": "2"}, 429, None, True),
        (500, {"error": {"message": "boom"}}, {}, 502, "upstream_error", True),
        (503, b"<html>bad gateway</html>", {}, 502, "upstream_error", True),
        (401, {"error": {"message": "bad key sk-abc"}}, {}, 502, "upstream_auth_error", False),
        (
            529,
            {"type": "error", "error": {"type": "overloaded_error"}},
            {},
            502,
            "upstream_error",
            True,
        ),
        (400, {"error": "vllm style"}, {}, 400, None, False),
    ],
)
def test_errors(status, body, headers, caller_status, code, retryable) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    err = openai_error(status, headers, raw)
    assert isinstance(err, UpstreamStatusError)
    assert err.status == caller_status
    assert err.code == code
    assert err.retryable is retryable
    assert "sk-abc" not in err.message
    if status == 429:
        assert err.headers == {"retry-after": "2"}
    if body == {"error": "vllm style"}:
        assert err.message == "vllm style"


def test_error_headers_are_sanitised() -> None:
    err = openai_error(429, {"retry-after": "1\r\nx-evil: 1"}, b"{}")
    assert err.headers == {}


@pytest.mark.parametrize(
    ("raw", "length"),
    [
        (b'{"choices":[{"delta":{"content":"Hello"}}]}', 5),
        (b'{"choices":[{"delta":{"content":""}}]}', 0),
        (b'{"choices":[{"delta":{}}]}', 0),
        (b'{"choices":[{"delta":{"content":"say \\"hi\\""}}]}', 10),
        (b'{"choices":[{"delta":{"content":"back\\\\"}}]}', 6),
        (b'{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"{\\"a\\":1}"}}]}}]}', 9),
        (b'{"choices":[{"delta":{"content":"unterminated', 0),
    ],
)
def test_text_length(raw: bytes, length: int) -> None:
    from aigateway.providers.base import text_length

    assert text_length(raw) == length


def test_output_is_measured_within_bounded_memory() -> None:
    state = StreamState()
    piece = b'{"choices":[{"delta":{"content":"' + b"x" * 1000 + b'"}}]}'
    for _ in range(500):  # ~500 KB relayed
        state.add_output(piece)
        assert state._unmeasured_bytes <= 64 * 1024 + len(piece)
    assert state.output_chars == 500_000


TEXTS = [
    b'{"choices":[{"delta":{"content":"plain"}}]}',
    b'{"choices":[{"delta":{"content":"caf\xc3\xa9 \\u00e9 \\"q\\" \\n"}}]}',
    b'{"choices":[{"delta":{"content":"bad \xff byte"}}]}',
    b'{"choices":[{"delta":{"content":"raw \x01 control"}}]}',
    b'{"choices":[{"delta":{"content":"half \\ud83d"}}]}',
    b'{"choices":[{"delta":{"content":"a"}}]}{"choices":[{"delta":{"content": "b"}}]}',
    b'{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"{\\"x\\":1}"}}]}}]}',
]


def _reference(pattern: bytes, raw: bytes) -> str:
    """What the text extraction gave before its fast path: every string through json."""
    out = []
    for m in re.findall(pattern, raw):
        try:
            out.append(json.loads(b'"' + m + b'"'))
        except ValueError:
            out.append(m.decode("utf-8", "replace"))
    return "".join(out)


@pytest.mark.parametrize("raw", TEXTS)
def test_stream_text_is_what_json_reads(raw: bytes) -> None:
    assert base.content_text(raw) == _reference(base._CONTENT.pattern, raw)
    assert base.output_text(raw) == _reference(base._TEXT.pattern, raw)

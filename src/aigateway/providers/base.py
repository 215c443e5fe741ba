"""The adapter interface. Adapters are pure: no sockets, no clocks, no aiohttp.

An adapter turns a caller's (OpenAI-shaped) request into an ``UpstreamRequest``
and the provider's bytes back into OpenAI-shaped responses and chunks plus a
normalized ``Usage``. Translation is idempotent: the same body may be translated
again for the next target after a failure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aigateway.errors import UpstreamProtocolError, UpstreamStatusError
from aigateway.jsonc import dumpb, loads
from aigateway.octets import BACKSLASH
from aigateway.sse import SSEDecoder, SSEError, SSEEvent
from aigateway.usage import Usage

# --- small helpers every adapter uses -----------------------------------------------


def json_object(body: bytes) -> dict[str, Any]:
    """A provider's JSON response body, which must be an object."""
    try:
        data = loads(body)
    except (ValueError, RecursionError):
        raise UpstreamProtocolError("The provider's response is not valid JSON.") from None
    if not isinstance(data, dict):
        raise UpstreamProtocolError("The provider's response is not a JSON object.")
    return data


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def text_of(content: Any, sep: str = "\n") -> str:
    """The text of a message's content: a string, or the text of its parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return sep.join(
            p["text"] for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str)
        )
    return ""


def tool_call(call_id: Any, name: Any, arguments: Any) -> dict[str, Any]:
    """An OpenAI tool call from a provider's (id, name, input object)."""
    return {
        "id": str(call_id or ""),
        "type": "function",
        "function": {
            "name": str(name or ""),
            "arguments": json.dumps(arguments or {}, ensure_ascii=False),
        },
    }


def retry_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A provider's Retry-After hints, passed on to the caller when sane."""
    out = {}
    for name in ("retry-after", "retry-after-ms"):
        value = headers.get(name)
        if value is not None and len(value) < 64 and value.isprintable():
            out[name] = value
    return out


def sse_events(sse: SSEDecoder, data: bytes | None) -> list[SSEEvent]:
    """Feed bytes to an SSE decoder (``None``: the stream ended)."""
    try:
        return sse.end() if data is None else sse.feed(data)
    except SSEError as exc:
        raise UpstreamProtocolError(f"The provider's stream is malformed: {exc}") from None


# (``__init__``s written out: see RequestContext in pipeline.py)
@dataclass(slots=True)
class UpstreamRequest:
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    stream: bool = False

    def __init__(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes, stream: bool = False
    ) -> None:
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.stream = stream


class Chunk:
    """One OpenAI ``chat.completion.chunk``.

    Built from a dict (translated chunks) or from the provider's JSON bytes
    (pass-through), which are then parsed only if someone reads ``data``: relaying
    a stream costs no JSON work for chunks nobody needs to look inside.
    """

    __slots__ = ("_data", "raw")

    def __init__(self, data: dict[str, Any] | None = None, raw: bytes | None = None) -> None:
        if data is None and raw is None:
            raise ValueError("a chunk needs data or raw JSON")
        self._data = data
        #: the chunk's JSON as sent upstream; None once it differs from ``data``
        self.raw = raw

    @property
    def data(self) -> dict[str, Any]:
        if self._data is None:
            assert self.raw is not None
            value = loads(self.raw)
            if not isinstance(value, dict):
                raise ValueError("a chunk must be a JSON object")
            self._data = value
        return self._data

    def encode(self) -> bytes:
        return self.raw if self.raw is not None else dumpb(self._data)


class Batch:
    """What one upstream read produced for the caller, written to it in one go.

    Its parts, in order, are ``Chunk``s and runs of pass-through chunks still in
    their SSE framing (``bytes``: relayed as they came, never parsed).
    ``all_chunks()`` gives every chunk as a ``Chunk`` for code that must look inside.
    """

    __slots__ = ("parts",)

    def __init__(self, parts: list[Chunk | bytes] | None = None) -> None:
        self.parts: list[Chunk | bytes] = parts if parts is not None else []

    def __bool__(self) -> bool:
        return bool(self.parts)

    def encode(self) -> bytes:
        return b"".join(
            [p if isinstance(p, bytes) else b"data: " + p.encode() + b"\n\n" for p in self.parts]
        )

    def all_chunks(self) -> list[Chunk]:
        out: list[Chunk] = []
        for part in self.parts:
            if isinstance(part, bytes):
                out += split_run(part)
            else:
                out.append(part)
        return out


def split_run(run: bytes) -> list[Chunk]:
    """The chunks of a pass-through run (``data: {...}`` events, as relayed)."""
    return [Chunk(raw=block[6:]) for block in run.split(b"\n\n") if block]


def join_run(chunks: list[Chunk]) -> bytes:
    """Chunks as a pass-through run again."""
    return b"".join([b"data: " + chunk.encode() + b"\n\n" for chunk in chunks])


@dataclass(slots=True)
class Parsed:
    """A whole (non-streamed) response in OpenAI shape."""

    body: dict[str, Any]
    usage: Usage | None
    #: the response JSON when the body was not changed, so it is not re-encoded
    raw: bytes | None = None
    served_model: str | None = None

    def __init__(
        self,
        body: dict[str, Any],
        usage: Usage | None,
        raw: bytes | None = None,
        served_model: str | None = None,
    ) -> None:
        self.body = body
        self.usage = usage
        self.raw = raw
        self.served_model = served_model


_TEXT = re.compile(rb'"(?:content|arguments)": ?"([^"\\]*(?:\\.[^"\\]*)*)"')
_CONTENT = re.compile(rb'"content": ?"([^"\\]*(?:\\.[^"\\]*)*)"')
#: relayed bytes kept for measuring later, when it may turn out not to be needed
_DEFER_LIMIT = 64 * 1024


def text_length(raw: bytes) -> int:
    """Characters of output text (content, tool arguments) in OpenAI chunk JSON;
    escapes count extra. Used to estimate tokens when a stream's usage never arrives."""
    return sum(len(m) for m in _TEXT.findall(raw))


def output_text(raw: bytes) -> str:
    """The output text (content, tool arguments) of OpenAI chunk JSON, unescaped."""
    return _strings(_TEXT, raw)


def content_text(raw: bytes) -> str:
    """The text content (no tool arguments) of OpenAI chunk JSON, unescaped."""
    return _strings(_CONTENT, raw)


def _strings(pattern: re.Pattern[bytes], raw: bytes) -> str:
    out = []
    for m in pattern.findall(raw):
        if BACKSLASH not in m:  # nothing to unescape: what json.loads would give, cheaper
            out.append(m.decode("utf-8", "replace"))
            continue
        try:
            out.append(json.loads(b'"' + m + b'"'))
        except ValueError:
            out.append(m.decode("utf-8", "replace"))
    return "".join(out)


@dataclass(slots=True)
class StreamState:
    usage: Usage | None = None
    served_model: str | None = None
    finished: bool = False
    #: counts tokens of output text (the gateway's tokenizer); None: chars / 4
    counter: Callable[[str], int] | None = None
    _chars: int = 0
    _tokens: int = 0
    _unmeasured: list[bytes] = field(default_factory=list)
    _unmeasured_bytes: int = 0

    def __init__(self) -> None:
        self.usage = None
        self.served_model = None
        self.finished = False
        self.counter = None
        self._chars = 0
        self._tokens = 0
        self._unmeasured = []
        self._unmeasured_bytes = 0

    def add_output(self, chunk_json: bytes) -> None:
        """Note relayed chunk JSON. Its text is measured only if ``output_chars`` is
        read (usage never came) or more than 64 KiB wait: memory stays bounded."""
        self._unmeasured.append(chunk_json)
        self._unmeasured_bytes += len(chunk_json)
        if self._unmeasured_bytes > _DEFER_LIMIT:
            self._measure()

    @property
    def output_chars(self) -> int:
        """Output text produced so far, in characters (for estimating tokens)."""
        self._measure()
        return self._chars

    @property
    def output_tokens(self) -> int:
        """Output tokens produced so far, counted locally."""
        self._measure()
        return self._tokens if self.counter is not None else -(-self._chars // 4)

    def _measure(self) -> None:
        if self._unmeasured:
            raw = b"".join(self._unmeasured)
            self._chars += text_length(raw)
            if self.counter is not None:
                self._tokens += self.counter(output_text(raw))
            self._unmeasured.clear()
            self._unmeasured_bytes = 0


class StreamDecoder(Protocol):
    state: StreamState

    def feed(self, data: bytes) -> Batch:
        """Bytes as they arrive → what to send to the caller now."""
        ...

    def end(self) -> Batch:
        """The upstream closed. Raises ``UpstreamProtocolError`` if it stopped early."""
        ...


class ProviderAdapter(Protocol):
    def chat_request(
        self, body: Mapping[str, Any], model: str, *, stream: bool, api_key: str | None
    ) -> UpstreamRequest: ...

    def parse_chat(self, body: bytes) -> Parsed: ...

    def stream_decoder(self, *, client_wants_usage: bool) -> StreamDecoder: ...

    def embeddings_request(
        self, body: Mapping[str, Any], model: str, *, api_key: str | None
    ) -> UpstreamRequest: ...

    def parse_embeddings(self, body: bytes) -> Parsed: ...

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamStatusError:
        """A non-2xx answer → the error the caller sees (no secret in it)."""
        ...

"""OpenAI and every OpenAI-compatible server (vLLM, Ollama, DeepSeek, Mistral, ...).

Mostly pass-through: the caller's body goes upstream with the model name swapped
for the target's, and, on streams, ``stream_options.include_usage`` switched on so
usage is never missing; the extra usage chunk is dropped again when the caller
did not ask for it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aigateway.errors import UpstreamProtocolError, UpstreamStatusError
from aigateway.jsonc import dumpb
from aigateway.octets import BACKSLASH, CR, LF
from aigateway.providers.base import (
    Batch,
    Chunk,
    Parsed,
    StreamState,
    UpstreamRequest,
    json_object,
    retry_headers,
    sse_events,
)
from aigateway.sse import SSEDecoder, SSEEvent
from aigateway.usage import Usage


class OpenAIAdapter:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None,
        headers: Mapping[str, str] | None = None,
        stream_usage: bool = True,
        max_tokens_field: str = "max_tokens",
    ) -> None:
        self._base = base_url.rstrip("/")
        #: where an output cap goes (the caller's own field is left as sent)
        self._completion_field = max_tokens_field == "max_completion_tokens"
        self._api_key = api_key
        self._headers = {"content-type": "application/json", **(headers or {})}
        self._stream_usage = stream_usage

    def _url(self, operation: str, model: str) -> str:
        return f"{self._base}/{operation}"

    def _request_headers(self, api_key: str | None) -> dict[str, str]:
        key = api_key or self._api_key
        if not key:
            return self._headers
        return {**self._headers, "authorization": f"Bearer {key}"}

    def chat_request(
        self, body: Mapping[str, Any], model: str, *, stream: bool, api_key: str | None
    ) -> UpstreamRequest:
        out = dict(body)
        out["model"] = model
        if self._completion_field and "max_tokens" in out and "max_completion_tokens" not in out:
            out["max_completion_tokens"] = out.pop("max_tokens")
        if stream and self._stream_usage:
            options = body.get("stream_options")
            out["stream_options"] = {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            }
        return UpstreamRequest(
            "POST",
            self._url("chat/completions", model),
            self._request_headers(api_key),
            dumpb(out),
            stream=stream,
        )

    def parse_chat(self, body: bytes) -> Parsed:
        data = json_object(body)
        if not isinstance(data.get("choices"), list):
            raise UpstreamProtocolError("The provider's response has no 'choices'.")
        model = data.get("model")
        return Parsed(
            data,
            Usage.from_openai(data.get("usage")),
            raw=body,
            served_model=model if isinstance(model, str) else None,
        )

    def stream_decoder(self, *, client_wants_usage: bool) -> OpenAIStreamDecoder:
        return OpenAIStreamDecoder(client_wants_usage=client_wants_usage)

    def embeddings_request(
        self, body: Mapping[str, Any], model: str, *, api_key: str | None
    ) -> UpstreamRequest:
        out = dict(body)
        out["model"] = model
        return UpstreamRequest(
            "POST",
            self._url("embeddings", model),
            self._request_headers(api_key),
            dumpb(out),
        )

    def parse_embeddings(self, body: bytes) -> Parsed:
        data = json_object(body)
        if not isinstance(data.get("data"), list):
            raise UpstreamProtocolError("The provider's embeddings response has no 'data'.")
        usage = data.get("usage")
        model = data.get("model")
        return Parsed(
            data,
            Usage.from_openai({"completion_tokens": 0, **usage})
            if isinstance(usage, dict)
            else None,
            raw=body,
            served_model=model if isinstance(model, str) else None,
        )

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamStatusError:
        return openai_error(status, headers, body)


def openai_error(status: int, headers: Mapping[str, str], body: bytes) -> UpstreamStatusError:
    """An OpenAI-shaped error body (or anything else) → ``UpstreamStatusError``."""
    message = f"The provider answered HTTP {status}."
    err_type = code = param = None
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        if isinstance(err.get("message"), str) and err["message"]:
            message = err["message"]
        err_type = _str_or_none(err.get("type"))
        code = _str_or_none(err.get("code"))
        param = _str_or_none(err.get("param"))
    elif isinstance(err, str) and err:
        message = err  # vLLM / Ollama style {"error": "..."}
    return UpstreamStatusError(
        status,
        message,
        upstream_type=err_type,
        upstream_code=code,
        param=param,
        headers=retry_headers(headers),
    )


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    return str(value)[:200]


# Streams are relayed without parsing: a read's complete events go out as they came,
# up to the first event that needs a look inside (an error, a usage object, [DONE]).
# Only those, and the stream's first chunk (for the served model), are parsed.
# ("usage": null, on every chunk of an OpenAI stream with include_usage, is plain.)
# (``data: [DONE]``, the longer needle, is found faster; an event written
# ``data:[DONE]`` fails the framing check instead, and the read is parsed.)
_MARKERS = (b'"error"', b"data: [DONE]")
_JSON_SPACE = (b" ", b"\t")  # (no newlines inside a one-line event)
MAX_EVENT_BYTES = 16 * 1024 * 1024


class OpenAIStreamDecoder:
    def __init__(self, *, client_wants_usage: bool) -> None:
        self._keep_usage_chunk = client_wants_usage
        self._first = True
        self._pending = b""
        self._parts: list[bytes] = []  # an unfinished line, joined when a newline comes
        self._sse = SSEDecoder()
        self.state = StreamState()

    def feed(self, data: bytes) -> Batch:
        if self.state.finished:
            return Batch()  # nothing after [DONE]
        if LF not in data and CR not in data:
            self._parts.append(data)  # no event can end here
            if len(self._pending) + sum(map(len, self._parts)) > MAX_EVENT_BYTES:
                raise UpstreamProtocolError("The provider sent an oversized stream event.")
            return Batch()
        if self._parts:
            data = b"".join(self._parts) + data
            self._parts.clear()
        buf = self._pending + data if self._pending else data
        if CR in buf:
            held = buf.endswith(b"\r")  # maybe half of a CRLF
            buf = buf[:-1] if held else buf
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + (b"\r" if held else b"")
        cut = buf.rfind(b"\n\n") + 2
        if cut < 2:
            self._pending = buf
            if len(buf) > MAX_EVENT_BYTES:
                raise UpstreamProtocolError("The provider sent an oversized stream event.")
            return Batch()
        complete, self._pending = buf[:cut], buf[cut:]
        parts: list[Chunk | bytes] = []
        split = _plain_prefix(complete)
        if self._first:  # the first event names the served model
            first = complete.find(b"\n\n") + 2
            model = _top_level_model(complete, first) if split >= first else None
            if model is not None:
                self._first = False
                self.state.served_model = model
            else:  # not a plain event, or its model is not plainly written: parse it
                parts += self._parse(self._sse.feed(complete[:first]))
                complete = complete[first:]
                split = split - first if split >= first else _plain_prefix(complete)
        if split:
            framed = complete[:split]
            self.state.add_output(framed)
            parts.append(framed)
            complete = complete[split:]
        if complete:
            parts += self._parse(self._sse.feed(complete))
        return Batch(parts)

    def end(self) -> Batch:
        tail = b"".join([self._pending, *self._parts])
        self._pending, self._parts = b"", []
        events = sse_events(self._sse, tail) + sse_events(self._sse, None) if tail else []
        batch = Batch(list(self._parse(events)))
        if not self.state.finished:
            raise UpstreamProtocolError("The provider's stream ended before it was complete.")
        return batch

    def _parse(self, events: list[SSEEvent]) -> list[Chunk | bytes]:
        out: list[Chunk | bytes] = []
        state = self.state
        for event in events:
            raw = event.data
            if raw == b"[DONE]":
                state.finished = True
                continue
            if state.finished:
                continue
            chunk = Chunk(raw=raw)
            data = _chunk_data(chunk)
            if "error" in data:
                err = data["error"]
                message = err.get("message") if isinstance(err, dict) else None
                raise UpstreamProtocolError(
                    message if isinstance(message, str) else "The provider's stream failed."
                )
            if self._first:
                self._first = False
                if isinstance(data.get("model"), str):
                    state.served_model = data["model"]
            usage = data.get("usage")
            if usage is not None:
                state.usage = Usage.from_openai(usage) or state.usage
                if not data.get("choices") and not self._keep_usage_chunk:
                    continue  # the usage chunk we asked for on the caller's behalf
            state.add_output(raw)
            out.append(chunk)
        return out


def _top_level_model(events: bytes, end: int) -> str | None:
    """The ``model`` of the plain ``data:`` event ``events[:end]``, read without
    parsing: only when it is a key of the top-level object (no ``{`` before it but
    the object's own) and its value a plain string (no escapes). Else None, and the
    event is parsed."""
    at = events.find(b'"model":', 0, end)
    if at < 0 or events.count(b"{", 0, at) != 1:
        return None
    start = at + 8
    while events[start : start + 1] == b" ":
        start += 1
    if events[start : start + 1] != b'"':
        return None
    close = events.find(b'"', start + 1, end)
    value = events[start + 1 : close]
    if close < 0 or BACKSLASH in value:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _plain_prefix(complete: bytes) -> int:
    """How many leading bytes of ``complete`` (whole events) can be relayed untouched:
    single-line ``data:`` events with no error, usage object or [DONE] in them."""
    stop = len(complete)
    for marker in _MARKERS:
        at = complete.find(marker, 0, stop)
        if at >= 0:
            stop = at
    at = complete.find(b'"usage"', 0, stop)
    while at >= 0:
        value = at + 7
        while complete[value : value + 1] in _JSON_SPACE:
            value += 1
        if complete[value : value + 1] == b":":
            value += 1
            while complete[value : value + 1] in _JSON_SPACE:
                value += 1
        if complete[value : value + 4] != b"null":
            stop = at  # a usage object (or a "usage" in text): parse from that event on
            break
        at = complete.find(b'"usage"', value, stop)
    if stop < len(complete):
        stop = complete.rfind(b"\n\n", 0, stop) + 2  # back to the start of that event
        if stop < 2:
            return 0
    # Every line a "data: " line, every event one line: no single newlines, and each
    # event boundary followed by "data: " (the first event checked by hand).
    events = complete.count(b"\n\ndata: ", 0, stop) + 1
    if not complete.startswith(b"data: ") or complete.count(b"\n", 0, stop) != 2 * events:
        return 0  # comments, other fields, multi-line data: parse them properly
    return stop


def _chunk_data(chunk: Chunk) -> dict[str, Any]:
    try:
        return chunk.data
    except (ValueError, RecursionError):
        raise UpstreamProtocolError("The provider sent a malformed stream event.") from None

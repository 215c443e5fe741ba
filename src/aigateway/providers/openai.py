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
from aigateway.providers.base import Chunk, Parsed, StreamState, UpstreamRequest
from aigateway.sse import SSEDecoder, SSEError
from aigateway.wire import Usage


class OpenAIAdapter:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None,
        headers: Mapping[str, str] | None = None,
        stream_usage: bool = True,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._api_key = api_key
        self._headers = {"content-type": "application/json", **(headers or {})}
        self._stream_usage = stream_usage

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
        if stream and self._stream_usage:
            options = body.get("stream_options")
            out["stream_options"] = {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            }
        return UpstreamRequest(
            "POST",
            self._base + "/chat/completions",
            self._request_headers(api_key),
            json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode(),
            stream=stream,
        )

    def parse_chat(self, body: bytes) -> Parsed:
        data = _json_object(body)
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
            self._base + "/embeddings",
            self._request_headers(api_key),
            json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode(),
        )

    def parse_embeddings(self, body: bytes) -> Parsed:
        data = _json_object(body)
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
    passed = {}
    for name in ("retry-after", "retry-after-ms"):
        value = headers.get(name)
        if value is not None and len(value) < 64 and value.isprintable():
            passed[name] = value
    return UpstreamStatusError(
        status, message, upstream_type=err_type, upstream_code=code, param=param, headers=passed
    )


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    return str(value)[:200]


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise UpstreamProtocolError("The provider's response is not valid JSON.") from None
    if not isinstance(data, dict):
        raise UpstreamProtocolError("The provider's response is not a JSON object.")
    return data


class OpenAIStreamDecoder:
    def __init__(self, *, client_wants_usage: bool) -> None:
        self._sse = SSEDecoder()
        self._keep_usage_chunk = client_wants_usage
        self.state = StreamState()

    def feed(self, data: bytes) -> list[Chunk]:
        try:
            events = self._sse.feed(data)
        except SSEError as exc:
            raise UpstreamProtocolError(f"The provider's stream is malformed: {exc}") from None
        return self._chunks(events)

    def end(self) -> list[Chunk]:
        chunks = self._chunks(self._sse.end())
        if not self.state.finished:
            raise UpstreamProtocolError("The provider's stream ended before it was complete.")
        return chunks

    def _chunks(self, events: list[Any]) -> list[Chunk]:
        out: list[Chunk] = []
        state = self.state
        for event in events:
            raw = event.data
            if raw == b"[DONE]":
                state.finished = True
                continue
            if state.finished:
                continue
            try:
                data = json.loads(raw)
            except (ValueError, RecursionError):
                raise UpstreamProtocolError("The provider sent a malformed stream event.") from None
            if not isinstance(data, dict):
                raise UpstreamProtocolError("The provider sent a malformed stream event.")
            if "error" in data:
                err = data["error"]
                message = err.get("message") if isinstance(err, dict) else None
                raise UpstreamProtocolError(
                    message if isinstance(message, str) else "The provider's stream failed."
                )
            if state.served_model is None and isinstance(data.get("model"), str):
                state.served_model = data["model"]
            choices = data.get("choices")
            usage = data.get("usage")
            if usage is not None:
                state.usage = Usage.from_openai(usage) or state.usage
                if not choices and not self._keep_usage_chunk:
                    continue  # the usage chunk we asked for on the caller's behalf
            if choices and isinstance(choices, list):
                for choice in choices:
                    delta = choice.get("delta") if isinstance(choice, dict) else None
                    if isinstance(delta, dict):
                        content = delta.get("content")
                        if isinstance(content, str):
                            state.output_chars += len(content)
            out.append(Chunk(data, raw))
        return out

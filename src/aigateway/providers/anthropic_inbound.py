"""The Anthropic Messages API as an inbound surface (``POST /v1/messages``).

Callers (the Anthropic SDK, Claude Code) speak Anthropic; routes may end at any
provider. For an Anthropic target the request goes through unchanged (see the
Anthropic adapter's ``messages_request``); for any other it is translated here to
an OpenAI chat request, and the answer back to an Anthropic message or to the
event stream the Anthropic SDK expects (``message_start``, content blocks,
``message_delta`` with usage, ``message_stop``). Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aigateway.errors import GatewayError, InvalidRequest
from aigateway.providers.base import text_of, tool_call

STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    415: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def validate_messages(body: Mapping[str, Any]) -> None:
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequest("model: a string is required", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: a non-empty list is required", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or message.get("role") not in ("user", "assistant"):
            raise InvalidRequest(
                f"messages.{i}.role: 'user' or 'assistant' is required", param=f"messages.{i}"
            )
        if not isinstance(message.get("content"), str | list):
            raise InvalidRequest(
                f"messages.{i}.content: a string or a list of blocks is required",
                param=f"messages.{i}.content",
            )
    tokens = body.get("max_tokens")
    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 1:
        raise InvalidRequest("max_tokens: a positive integer is required", param="max_tokens")


def error_body(exc: GatewayError) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(exc.status, "api_error")
    if exc.type == "insufficient_quota":
        kind = "rate_limit_error"
    return {"type": "error", "error": {"type": kind, "message": exc.message}}


# --- request: Anthropic → OpenAI chat ------------------------------------------------


def messages_to_chat(body: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"model": body["model"], "max_tokens": body["max_tokens"]}
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if isinstance(system, str) and system:
        messages.append({"role": "system", "content": system})
    elif isinstance(system, list):
        text = "\n".join(
            b["text"] for b in system if isinstance(b, Mapping) and isinstance(b.get("text"), str)
        )
        if text:
            messages.append({"role": "system", "content": text})
    for message in body["messages"]:
        content = message["content"]
        if message["role"] == "assistant":
            messages.append(_assistant(content))
        else:
            messages += _user(content)
    out["messages"] = messages
    for name in ("temperature", "top_p"):
        if isinstance(body.get(name), int | float):
            out[name] = body[name]
    if isinstance(body.get("stop_sequences"), list) and body["stop_sequences"]:
        out["stop"] = body["stop_sequences"][:4]
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    metadata = body.get("metadata")
    if isinstance(metadata, Mapping) and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        out["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": str(t.get("name", "")),
                    **(
                        {"description": t["description"]}
                        if isinstance(t.get("description"), str)
                        else {}
                    ),
                    "parameters": t.get("input_schema") or {"type": "object", "properties": {}},
                },
            }
            for t in tools
            if isinstance(t, Mapping) and "name" in t
        ]
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping):
        kind = choice.get("type")
        if kind == "auto":
            out["tool_choice"] = "auto"
        elif kind == "any":
            out["tool_choice"] = "required"
        elif kind == "none":
            out["tool_choice"] = "none"
        elif kind == "tool" and isinstance(choice.get("name"), str):
            out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
        if choice.get("disable_parallel_tool_use") is True and out.get("tools"):
            out["parallel_tool_calls"] = False
    return out


def _blocks(content: Any) -> list[Mapping[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content if isinstance(b, Mapping)]


def _user(content: Any) -> list[dict[str, Any]]:
    """A user turn: its tool results become tool messages first, then the rest."""
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in _blocks(content):
        kind = block.get("type")
        if kind == "tool_result":
            result = block.get("content")
            text = text_of(result)
            out.append(
                {"role": "tool", "tool_call_id": str(block.get("tool_use_id", "")), "content": text}
            )
        elif kind == "text" and isinstance(block.get("text"), str):
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            source = block.get("source")
            if isinstance(source, Mapping) and source.get("type") == "base64":
                url = f"data:{source.get('media_type')};base64,{source.get('data')}"
                parts.append({"type": "image_url", "image_url": {"url": url}})
            elif isinstance(source, Mapping) and source.get("type") == "url":
                parts.append({"type": "image_url", "image_url": {"url": source.get("url")}})
    if parts:
        only_text = all(p["type"] == "text" for p in parts)
        out.append(
            {
                "role": "user",
                "content": "\n".join(p["text"] for p in parts) if only_text else parts,
            }
        )
    return out


def _assistant(content: Any) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in _blocks(content):
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif block.get("type") == "tool_use":
            calls.append(tool_call(block.get("id"), block.get("name"), block.get("input")))
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return message


# --- response: OpenAI chat → Anthropic -----------------------------------------------


def anthropic_usage(usage: Mapping[str, Any] | None) -> dict[str, Any]:
    if not isinstance(usage, Mapping):
        return {"input_tokens": 0, "output_tokens": 0}
    details = usage.get("prompt_tokens_details")
    details = details if isinstance(details, Mapping) else {}
    cached = int(details.get("cached_tokens") or 0)
    written = int(details.get("cache_write_tokens") or 0)
    out = {
        "input_tokens": max(0, int(usage.get("prompt_tokens") or 0) - cached - written),
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": cached,
        "output_tokens": int(usage.get("completion_tokens") or 0),
    }
    if isinstance(usage.get("cost"), int | float):
        out["cost"] = usage["cost"]  # the gateway's figure, as in chat completions
    return out


def chat_to_message(response: Mapping[str, Any], model: str) -> dict[str, Any]:
    choices = response.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    message = choice.get("message") if isinstance(choice, Mapping) else None
    message = message if isinstance(message, Mapping) else {}
    content: list[dict[str, Any]] = []
    if isinstance(message.get("content"), str) and message["content"]:
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping):
            continue
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except ValueError:
            arguments = {}
        content.append(
            {
                "type": "tool_use",
                "id": str(call.get("id", "")),
                "name": str(function.get("name", "")),
                "input": arguments if isinstance(arguments, dict) else {"value": arguments},
            }
        )
    finish = choice.get("finish_reason") if isinstance(choice, Mapping) else None
    return {
        "id": "msg_" + str(response.get("id", "")).removeprefix("chatcmpl-"),
        "type": "message",
        "role": "assistant",
        "model": str(response.get("model") or model),
        "content": content,
        "stop_reason": STOP.get(str(finish), "end_turn"),
        "stop_sequence": None,
        "usage": anthropic_usage(response.get("usage")),
    }


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def sse(event: str, data: Mapping[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + json.dumps(data).encode() + b"\n\n"


class EventWriter:
    """OpenAI chunks (dicts) → the Anthropic event stream, one choice."""

    def __init__(self, model: str) -> None:
        self._model = model
        self._started = False
        self._block = -1
        self._open: str | None = None  # "text" or "tool"
        self._tool_blocks: dict[int, int] = {}  # OpenAI tool index → block index
        self._stop = "end_turn"
        self._usage: dict[str, Any] = {"input_tokens": 0, "output_tokens": 0}

    def feed(self, chunks: list[dict[str, Any]]) -> bytes:
        out: list[bytes] = []
        for chunk in chunks:
            if not self._started:
                out.append(self._start(chunk))
            if isinstance(chunk.get("usage"), Mapping):
                self._usage = anthropic_usage(chunk["usage"])
            choices = chunk.get("choices")
            if not isinstance(choices, list) or not choices:
                continue
            choice = _map(choices[0])
            delta = _map(choice.get("delta"))
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self._open != "text":
                    out.append(self._open_block({"type": "text", "text": ""}, "text"))
                out.append(
                    sse(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": self._block,
                            "delta": {"type": "text_delta", "text": text},
                        },
                    )
                )
            for call in delta.get("tool_calls") or ():
                if not isinstance(call, Mapping):
                    continue
                index = int(call.get("index", 0))
                function = _map(call.get("function"))
                if index not in self._tool_blocks:
                    block = {
                        "type": "tool_use",
                        "id": str(call.get("id", "")),
                        "name": str(function.get("name", "")),
                        "input": {},
                    }
                    out.append(self._open_block(block, "tool"))
                    self._tool_blocks[index] = self._block
                arguments = function.get("arguments")
                if isinstance(arguments, str) and arguments:
                    out.append(
                        sse(
                            "content_block_delta",
                            {
                                "type": "content_block_delta",
                                "index": self._tool_blocks[index],
                                "delta": {"type": "input_json_delta", "partial_json": arguments},
                            },
                        )
                    )
            if choice.get("finish_reason"):
                self._stop = STOP.get(str(choice["finish_reason"]), "end_turn")
        return b"".join(out)

    def _start(self, chunk: Mapping[str, Any]) -> bytes:
        self._started = True
        message: dict[str, Any] = {
            "id": "msg_" + str(chunk.get("id", "")).removeprefix("chatcmpl-"),
            "type": "message",
            "role": "assistant",
            "model": str(chunk.get("model") or self._model),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return sse("message_start", {"type": "message_start", "message": message})

    def _open_block(self, block: dict[str, Any], kind: str) -> bytes:
        out = self._close_block()
        self._block += 1
        self._open = kind
        return out + sse(
            "content_block_start",
            {"type": "content_block_start", "index": self._block, "content_block": block},
        )

    def _close_block(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return sse("content_block_stop", {"type": "content_block_stop", "index": self._block})

    def end(self) -> bytes:
        head = b"" if self._started else self._start({})
        return (
            head
            + self._close_block()
            + sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": self._stop, "stop_sequence": None},
                    "usage": self._usage,
                },
            )
            + sse("message_stop", {"type": "message_stop"})
        )


def error_event(exc: GatewayError) -> bytes:
    return sse("error", error_body(exc))

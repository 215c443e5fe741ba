"""Anthropic's Messages API behind the OpenAI chat-completions surface.

Requests: system/developer messages become ``system``; images (data URLs and
http URLs), tool calls and tool results become content blocks (consecutive tool
results merge into one user turn); ``max_tokens`` is required (the caller's, else
the provider's ``default_max_tokens``); ``temperature`` is clamped to 1 and
``top_p`` dropped when both are set (current Claude models refuse both);
``reasoning_effort`` becomes ``thinking`` with a configured budget; JSON schema
output uses ``output_config.format``. Responses and streams come back as OpenAI
chat completions and chunks, with usage normalized (cache writes and reads,
thinking) and ``finish_reason`` mapped. Pure: no I/O; the clock (for ``created``)
is passed in.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from aigateway.config.model import AnthropicProvider
from aigateway.errors import InvalidRequest, UpstreamProtocolError, UpstreamStatusError
from aigateway.jsonc import dumpb
from aigateway.providers.base import (
    Batch,
    Chunk,
    Parsed,
    StreamState,
    UpstreamRequest,
    as_dict,
    json_object,
    retry_headers,
    sse_events,
    text_of,
    tool_call,
)
from aigateway.sse import SSEDecoder, SSEEvent
from aigateway.usage import Usage

FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
#: OpenAI error types by Anthropic's (most share the name)
_ERROR_TYPES = {
    "overloaded_error": "server_error",
    "api_error": "server_error",
    "timeout_error": "server_error",
    "not_found_error": "invalid_request_error",
    "request_too_large": "invalid_request_error",
}


class AnthropicAdapter:
    def __init__(
        self,
        config: AnthropicProvider,
        *,
        api_key: str | None,
        clock: Callable[[], float],
    ) -> None:
        self._config = config
        self._url = config.base_url.rstrip("/") + "/messages"
        self._api_key = api_key
        self._clock = clock
        headers = {
            "content-type": "application/json",
            "anthropic-version": config.version,
            **config.headers,
        }
        if config.beta:
            headers["anthropic-beta"] = ",".join(config.beta)
        self._headers = headers

    # --- requests --------------------------------------------------------------------

    def chat_request(
        self, body: Mapping[str, Any], model: str, *, stream: bool, api_key: str | None
    ) -> UpstreamRequest:
        out = to_anthropic(body, model, self._config)
        if stream:
            out["stream"] = True
        headers = dict(self._headers)
        key = api_key or self._api_key
        if key:
            headers["x-api-key"] = key
        return UpstreamRequest(
            "POST",
            self._url,
            headers,
            dumpb(out),
            stream=stream,
        )

    # --- the Anthropic API passed through (inbound /v1/messages) ----------------------

    def messages_request(
        self,
        body: Mapping[str, Any],
        model: str,
        *,
        stream: bool,
        api_key: str | None,
        caller_headers: Mapping[str, str],
    ) -> UpstreamRequest:
        """The caller's own Messages request, unchanged but for the model, with its
        ``anthropic-version`` and ``anthropic-beta`` (merged with the provider's)."""
        headers = dict(self._headers)
        version = caller_headers.get("anthropic-version")
        if version and len(version) < 64 and version.isprintable():
            headers["anthropic-version"] = version
        betas = list(self._config.beta)
        for beta in (caller_headers.get("anthropic-beta") or "").split(","):
            beta = beta.strip()
            if beta and beta not in betas and len(beta) < 100 and beta.isprintable():
                betas.append(beta)
        if betas:
            headers["anthropic-beta"] = ",".join(betas)
        key = api_key or self._api_key
        if key:
            headers["x-api-key"] = key
        out = {**body, "model": model}
        return UpstreamRequest(
            "POST",
            self._url,
            headers,
            dumpb(out),
            stream=stream,
        )

    def parse_messages(self, body: bytes) -> Parsed:
        data = json_object(body)
        if data.get("type") != "message":
            raise UpstreamProtocolError("The provider's response is not an Anthropic message.")
        model = data.get("model") if isinstance(data.get("model"), str) else None
        return Parsed(data, Usage.from_anthropic(data.get("usage")), raw=body, served_model=model)

    def messages_stream_decoder(self) -> AnthropicRelay:
        return AnthropicRelay()

    def embeddings_request(
        self, body: Mapping[str, Any], model: str, *, api_key: str | None
    ) -> UpstreamRequest:
        raise InvalidRequest("Anthropic has no embeddings API; route embeddings elsewhere.")

    def parse_embeddings(self, body: bytes) -> Parsed:
        raise UpstreamProtocolError("Anthropic has no embeddings API.")

    # --- responses -------------------------------------------------------------------

    def parse_chat(self, body: bytes) -> Parsed:
        data = json_object(body)
        content = data.get("content")
        if data.get("type") != "message" or not isinstance(content, list):
            raise UpstreamProtocolError("The provider's response is not an Anthropic message.")
        texts, calls, thinking = [], [], []
        for block in content:
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            if kind == "text" and isinstance(block.get("text"), str):
                texts.append(block["text"])
            elif kind == "tool_use":
                calls.append(tool_call(block.get("id"), block.get("name"), block.get("input")))
            elif kind == "thinking" and isinstance(block.get("thinking"), str):
                thinking.append(block["thinking"])
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(texts) if texts else None,
            "refusal": None,
        }
        if calls:
            message["tool_calls"] = calls
        if thinking:
            message["reasoning_content"] = "".join(thinking)  # the de-facto extension
        usage = Usage.from_anthropic(data.get("usage"))
        model = data.get("model") if isinstance(data.get("model"), str) else None
        out = {
            "id": str(data.get("id", "")),
            "object": "chat.completion",
            "created": int(self._clock()),
            "model": model or "",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": FINISH.get(str(data.get("stop_reason")), "stop"),
                    "logprobs": None,
                }
            ],
        }
        if usage is not None:
            out["usage"] = usage.to_openai()
        return Parsed(out, usage, served_model=model)

    def stream_decoder(self, *, client_wants_usage: bool) -> AnthropicStreamDecoder:
        return AnthropicStreamDecoder(client_wants_usage=client_wants_usage, clock=self._clock)

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamStatusError:
        return anthropic_error(status, headers, body)


def anthropic_error(status: int, headers: Mapping[str, str], body: bytes) -> UpstreamStatusError:
    """``{"type": "error", "error": {"type", "message"}}`` → ``UpstreamStatusError``."""
    message = f"The provider answered HTTP {status}."
    err_type = None
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        if isinstance(err.get("message"), str) and err["message"]:
            message = err["message"][:2000]
        if isinstance(err.get("type"), str):
            err_type = str(_ERROR_TYPES.get(err["type"], err["type"]))[:100]
    return UpstreamStatusError(
        status, message, upstream_type=err_type, headers=retry_headers(headers)
    )


# --- request translation -------------------------------------------------------------


def to_anthropic(body: Mapping[str, Any], model: str, config: AnthropicProvider) -> dict[str, Any]:
    """An OpenAI chat request as an Anthropic Messages request."""
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        raise InvalidRequest("This model's provider returns one choice: 'n' must be 1.", param="n")
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    raw = body.get("messages")
    for i, message in enumerate(raw if isinstance(raw, list) else ()):
        if not isinstance(message, Mapping):
            continue
        role = message.get("role")
        if role in ("system", "developer"):
            text = text_of(message.get("content"))
            if text:
                system.append(text)
        elif role == "user":
            _append(messages, "user", _user_blocks(message.get("content"), i))
        elif role == "assistant":
            _append(messages, "assistant", _assistant_blocks(message, i))
        elif role in ("tool", "function"):
            _append(messages, "user", [_tool_result(message)])
    out: dict[str, Any] = {"model": model, "messages": messages}
    if system:
        out["system"] = "\n\n".join(system)
    asked = body.get("max_completion_tokens") or body.get("max_tokens")
    out["max_tokens"] = asked if isinstance(asked, int) and asked > 0 else config.default_max_tokens
    temperature = body.get("temperature")
    if isinstance(temperature, int | float):
        out["temperature"] = min(float(temperature), 1.0)
    elif isinstance(body.get("top_p"), int | float):
        out["top_p"] = body["top_p"]  # only alone: current models refuse both
    if isinstance(body.get("top_k"), int):
        out["top_k"] = body["top_k"]
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    stops = [s for s in stops if isinstance(s, str) and s.strip()]
    if stops:
        out["stop_sequences"] = stops
    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user[:256]}
    _tools(body, out)
    _output_format(body, out)
    effort = body.get("reasoning_effort")
    if isinstance(effort, str) and effort != "none":
        budget = getattr(config.thinking_budgets, effort, None)
        if isinstance(budget, int):
            out["thinking"] = {"type": "enabled", "budget_tokens": budget}
            out["max_tokens"] = max(out["max_tokens"], budget + 1024)
            out.pop("temperature", None)  # thinking allows no temperature or top_k
            out.pop("top_k", None)
    return out


def _append(messages: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Consecutive turns of one role merge (tool results then the user's next words)."""
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"] += blocks
    else:
        messages.append({"role": role, "content": blocks})


def _user_blocks(content: Any, index: int) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, Mapping):
            continue
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            if part["text"]:
                blocks.append(_with_cache({"type": "text", "text": part["text"]}, part))
        elif part.get("type") == "image_url":
            blocks.append(_image(part.get("image_url"), index))
    return blocks


def _image(value: Any, index: int) -> dict[str, Any]:
    url = value.get("url") if isinstance(value, Mapping) else value
    if not isinstance(url, str):
        raise InvalidRequest("An image part needs a url.", param=f"messages[{index}].content")
    if url.startswith("data:"):
        head, _, data = url.partition(",")
        media = head[5:].split(";", 1)[0]
        if media not in _IMAGE_TYPES or ";base64" not in head:
            raise InvalidRequest(
                "Images must be base64 data URLs of JPEG, PNG, GIF or WebP, or http(s) URLs.",
                param=f"messages[{index}].content",
            )
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _with_cache(block: dict[str, Any], part: Mapping[str, Any]) -> dict[str, Any]:
    cache = part.get("cache_control")
    if isinstance(cache, Mapping):  # a client-placed prompt-caching marker passes through
        block["cache_control"] = dict(cache)
    return block


def _assistant_blocks(message: Mapping[str, Any], index: int) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    text = text_of(message.get("content"))
    if text:
        blocks.append({"type": "text", "text": text})
    calls = message.get("tool_calls")
    legacy = message.get("function_call")
    if isinstance(legacy, Mapping):
        calls = [{"id": "call_legacy", "type": "function", "function": legacy}]
    for j, call in enumerate(calls if isinstance(calls, list) else ()):
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping):
            continue
        arguments = function.get("arguments")
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) and arguments else {}
        except ValueError:
            raise InvalidRequest(
                "A tool call's arguments are not valid JSON.",
                param=f"messages[{index}].tool_calls[{j}].function.arguments",
            ) from None
        blocks.append(
            {
                "type": "tool_use",
                "id": str(call.get("id") or f"call_{index}_{j}"),
                "name": str(function.get("name", "")),
                "input": parsed if isinstance(parsed, dict) else {"value": parsed},
            }
        )
    return blocks


def _tool_result(message: Mapping[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    return {
        "type": "tool_result",
        "tool_use_id": str(message.get("tool_call_id") or message.get("name") or "call_legacy"),
        "content": content if isinstance(content, str) else text_of(content),
    }


def _tools(body: Mapping[str, Any], out: dict[str, Any]) -> None:
    tools = body.get("tools")
    functions = body.get("functions")
    declared = []
    for tool in tools if isinstance(tools, list) else ():
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping):
            declared.append(function)
    declared += (
        [f for f in functions if isinstance(f, Mapping)] if isinstance(functions, list) else []
    )
    if declared:
        out["tools"] = [
            {
                "name": str(f.get("name", "")),
                **(
                    {"description": f["description"]}
                    if isinstance(f.get("description"), str)
                    else {}
                ),
                "input_schema": f.get("parameters")
                if isinstance(f.get("parameters"), Mapping)
                else {"type": "object", "properties": {}},
            }
            for f in declared
        ]
    choice = body.get("tool_choice", body.get("function_call"))
    mapped: dict[str, Any] | None = None
    if choice == "auto":
        mapped = {"type": "auto"}
    elif choice in ("required", "any"):
        mapped = {"type": "any"}
    elif choice == "none":
        mapped = {"type": "none"}
    elif isinstance(choice, Mapping):
        name = choice.get("name")
        function = choice.get("function")
        if isinstance(function, Mapping):
            name = function.get("name")
        if isinstance(name, str):
            mapped = {"type": "tool", "name": name}
    if body.get("parallel_tool_calls") is False and declared:
        mapped = mapped or {"type": "auto"}
        if mapped["type"] != "none":
            mapped["disable_parallel_tool_use"] = True
    if mapped is not None and declared:
        out["tool_choice"] = mapped


def _tool(function: Mapping[str, Any]) -> dict[str, Any]:
    schema = function.get("parameters")
    tool: dict[str, Any] = {
        "name": str(function.get("name", "")),
        "input_schema": schema
        if isinstance(schema, Mapping)
        else {"type": "object", "properties": {}},
    }
    if isinstance(function.get("description"), str):
        tool["description"] = function["description"]
    return tool


def _output_format(body: Mapping[str, Any], out: dict[str, Any]) -> None:
    fmt = body.get("response_format")
    if not isinstance(fmt, Mapping):
        return
    if fmt.get("type") == "json_schema" and isinstance(fmt.get("json_schema"), Mapping):
        schema = fmt["json_schema"].get("schema")
        if isinstance(schema, Mapping):
            out["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    elif fmt.get("type") == "json_object":
        instruction = "Answer with one JSON object and nothing else."
        out["system"] = f"{out['system']}\n\n{instruction}" if out.get("system") else instruction


# --- streams -------------------------------------------------------------------------


class AnthropicStreamDecoder:
    """Anthropic stream events → OpenAI ``chat.completion.chunk``s, one choice."""

    def __init__(self, *, client_wants_usage: bool, clock: Callable[[], float]) -> None:
        self._sse = SSEDecoder()
        self._wants_usage = client_wants_usage
        self._clock = clock
        self._id = ""
        self._model = ""
        self._created = 0
        self._usage: dict[str, Any] = {}
        #: Anthropic block index → OpenAI tool-call index
        self._tools: dict[int, int] = {}
        self.state = StreamState()

    def feed(self, data: bytes) -> Batch:
        return Batch([part for e in sse_events(self._sse, data) for part in self._event(e)])

    def end(self) -> Batch:
        batch = Batch([part for e in sse_events(self._sse, None) for part in self._event(e)])
        if not self.state.finished:
            raise UpstreamProtocolError("The provider's stream ended before it was complete.")
        return batch

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> Chunk:
        data: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        return Chunk(data=data)

    def _event(self, event: SSEEvent) -> list[Chunk | bytes]:
        if self.state.finished:
            return []
        try:
            data = json.loads(event.data)
        except (ValueError, RecursionError):
            raise UpstreamProtocolError("The provider sent a malformed stream event.") from None
        if not isinstance(data, dict):
            return []
        kind = data.get("type") or event.event
        if kind == "message_start":
            message = as_dict(data.get("message"))
            self._id = str(message.get("id", ""))
            self._model = str(message.get("model", ""))
            self._created = int(self._clock())
            self.state.served_model = self._model or None
            if isinstance(message.get("usage"), dict):
                self._usage.update(message["usage"])
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = data.get("content_block")
            if isinstance(block, dict) and block.get("type") == "tool_use":
                k = self._tools[int(data.get("index", 0))] = len(self._tools)
                return [
                    self._chunk(
                        {
                            "tool_calls": [
                                {
                                    "index": k,
                                    "id": str(block.get("id", "")),
                                    "type": "function",
                                    "function": {
                                        "name": str(block.get("name", "")),
                                        "arguments": "",
                                    },
                                }
                            ]
                        }
                    )
                ]
            return []
        if kind == "content_block_delta":
            delta = as_dict(data.get("delta"))
            if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
                self.state.add_output(json.dumps({"content": delta["text"]}).encode())
                return [self._chunk({"content": delta["text"]})]
            if delta.get("type") == "input_json_delta":
                k = self._tools.get(int(data.get("index", 0)), 0)
                partial = str(delta.get("partial_json", ""))
                self.state.add_output(json.dumps({"arguments": partial}).encode())
                return [
                    self._chunk({"tool_calls": [{"index": k, "function": {"arguments": partial}}]})
                ]
            if delta.get("type") == "thinking_delta" and isinstance(delta.get("thinking"), str):
                return [self._chunk({"reasoning_content": delta["thinking"]})]
            return []
        if kind == "message_delta":
            if isinstance(data.get("usage"), dict):
                self._usage.update(data["usage"])
            delta = as_dict(data.get("delta"))
            finish = FINISH.get(str(delta.get("stop_reason")), "stop")
            return [self._chunk({}, finish)]
        if kind == "message_stop":
            self.state.finished = True
            usage = Usage.from_anthropic(self._usage)
            self.state.usage = usage
            if usage is None or not self._wants_usage:
                return []
            return [
                Chunk(
                    data={
                        "id": self._id,
                        "object": "chat.completion.chunk",
                        "created": self._created,
                        "model": self._model,
                        "choices": [],
                        "usage": usage.to_openai(),
                    }
                )
            ]
        if kind == "error":
            err = as_dict(data.get("error"))
            said = err.get("message") if isinstance(err.get("message"), str) else None
            if err.get("type") == "overloaded_error":
                raise UpstreamStatusError(529, said or "The provider is overloaded.")
            raise UpstreamProtocolError(said or "The provider's stream failed.")
        return []  # ping, content_block_stop, signature deltas, events added later


class AnthropicRelay:
    """An Anthropic stream relayed byte for byte to an Anthropic caller; its events
    are read on the side for the served model, the usage and the end."""

    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self._usage: dict[str, Any] = {}
        self.state = StreamState()
        #: the start of an event not yet complete (batches hold whole events)
        self._partial = b""

    def feed(self, data: bytes) -> Batch:
        for event in sse_events(self._sse, data):
            self._read(event)
        data = self._partial + data
        end = max(data.rfind(b"\n\n") + 2, data.rfind(b"\r\n\r\n") + 4, 0)
        self._partial = data[end:]
        return Batch([data[:end]] if end else [])

    def end(self) -> Batch:
        for event in sse_events(self._sse, None):
            self._read(event)
        if not self.state.finished:
            raise UpstreamProtocolError("The provider's stream ended before it was complete.")
        rest, self._partial = self._partial, b""
        return Batch([rest] if rest else [])

    def _read(self, event: SSEEvent) -> None:
        try:
            data = json.loads(event.data)
        except (ValueError, RecursionError):
            raise UpstreamProtocolError("The provider sent a malformed stream event.") from None
        if not isinstance(data, dict):
            return
        kind = data.get("type") or event.event
        if kind == "message_start":
            message = as_dict(data.get("message"))
            if isinstance(message.get("model"), str):
                self.state.served_model = message["model"]
            self._usage.update(as_dict(message.get("usage")))
        elif kind == "message_delta":
            self._usage.update(as_dict(data.get("usage")))
        elif kind == "content_block_delta":
            delta = as_dict(data.get("delta"))
            text = delta.get("text") or delta.get("partial_json")
            if isinstance(text, str):
                self.state.add_output(json.dumps({"content": text}).encode())
        elif kind in ("message_stop", "error"):
            self.state.finished = True  # an error event reaches the caller as it came
            self.state.usage = Usage.from_anthropic(self._usage)

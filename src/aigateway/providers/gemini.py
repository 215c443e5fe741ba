"""Google Gemini (AI Studio API key) behind the OpenAI chat-completions surface.

``generateContent`` and ``streamGenerateContent?alt=sse``: system messages become
``systemInstruction``, turns become ``contents`` (assistant = ``model``), images
become ``inlineData``, tools ``functionDeclarations`` (JSON Schema), tool results
``functionResponse`` parts (their function name looked up from the assistant turn
that called them), sampling fields ``generationConfig``, ``reasoning_effort`` a
thinking budget. Thought signatures, which Gemini requires back on the next turn
of a tool conversation, ride inside the tool-call ids handed to the caller
(``<id>~sig~<signature>``) and are restored from them. Embeddings use
``batchEmbedContents``. Pure: no I/O; the clock is passed in.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from aigateway.config.model import GeminiProvider
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
)
from aigateway.sse import SSEDecoder, SSEEvent
from aigateway.usage import Usage

SIGNATURE = "~sig~"
_FILTERED = {
    "SAFETY", "RECITATION", "LANGUAGE", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
    "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "IMAGE_OTHER",
    "NO_IMAGE", "OTHER",
}  # fmt: skip
_ERROR_TYPES = {
    "INVALID_ARGUMENT": "invalid_request_error",
    "FAILED_PRECONDITION": "invalid_request_error",
    "NOT_FOUND": "invalid_request_error",
    "PERMISSION_DENIED": "permission_error",
    "UNAUTHENTICATED": "authentication_error",
    "RESOURCE_EXHAUSTED": "rate_limit_error",
}
_BUDGETS = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576}


def finish_reason(reason: Any, called: bool) -> str:
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _FILTERED:
        return "content_filter"
    return "tool_calls" if called else "stop"


class GeminiAdapter:
    def __init__(
        self, config: GeminiProvider, *, api_key: str | None, clock: Callable[[], float]
    ) -> None:
        self._base = config.base_url.rstrip("/")
        self._api_key = api_key
        self._clock = clock
        self._headers = {"content-type": "application/json", **config.headers}

    def _request(
        self, url: str, body: dict[str, Any], api_key: str | None, stream: bool
    ) -> UpstreamRequest:
        headers = dict(self._headers)
        key = api_key or self._api_key
        if key:
            headers["x-goog-api-key"] = key  # a header, not ?key=: URLs end up in logs
        data = dumpb(body)
        return UpstreamRequest("POST", url, headers, data, stream=stream)

    def chat_request(
        self, body: Mapping[str, Any], model: str, *, stream: bool, api_key: str | None
    ) -> UpstreamRequest:
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        url = f"{self._base}/models/{quote(model, safe='')}:{method}"
        return self._request(url, to_gemini(body), api_key, stream)

    def parse_chat(self, body: bytes) -> Parsed:
        data = json_object(body)
        model = data.get("modelVersion") if isinstance(data.get("modelVersion"), str) else None
        usage = Usage.from_gemini(data.get("usageMetadata"))
        candidates = data.get("candidates")
        candidate = candidates[0] if isinstance(candidates, list) and candidates else None
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        finish = "content_filter"  # no candidate: the prompt itself was blocked
        if isinstance(candidate, dict):
            texts, thoughts, calls = _parts(as_dict(candidate.get("content")).get("parts"), 0)
            message["content"] = "".join(texts) if texts else None
            if calls:
                message["tool_calls"] = calls
            if thoughts:
                message["reasoning_content"] = "".join(thoughts)
            finish = finish_reason(candidate.get("finishReason"), bool(calls))
        out: dict[str, Any] = {
            "id": "chatcmpl-" + str(data.get("responseId", "")),
            "object": "chat.completion",
            "created": int(self._clock()),
            "model": model or "",
            "choices": [
                {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
            ],
        }
        if usage is not None:
            out["usage"] = usage.to_openai()
        return Parsed(out, usage, served_model=model)

    def stream_decoder(self, *, client_wants_usage: bool) -> GeminiStreamDecoder:
        return GeminiStreamDecoder(client_wants_usage=client_wants_usage, clock=self._clock)

    def embeddings_request(
        self, body: Mapping[str, Any], model: str, *, api_key: str | None
    ) -> UpstreamRequest:
        value = body.get("input")
        texts = value if isinstance(value, list) else [value]
        if not all(isinstance(t, str) for t in texts):
            raise InvalidRequest("Gemini embeds text only: 'input' must be strings.", param="input")
        name = f"models/{model}"
        requests: list[dict[str, Any]] = []
        for text in texts:
            request: dict[str, Any] = {"model": name, "content": {"parts": [{"text": text}]}}
            if isinstance(body.get("dimensions"), int):
                request["outputDimensionality"] = body["dimensions"]
            requests.append(request)
        url = f"{self._base}/models/{quote(model, safe='')}:batchEmbedContents"
        return self._request(url, {"requests": requests}, api_key, False)

    def parse_embeddings(self, body: bytes) -> Parsed:
        data = json_object(body)
        embeddings = data.get("embeddings")
        if not isinstance(embeddings, list):
            raise UpstreamProtocolError("The provider's embeddings response has no 'embeddings'.")
        out = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": as_dict(e).get("values", [])}
                for i, e in enumerate(embeddings)
            ],
            "model": "",
        }
        return Parsed(out, None)

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamStatusError:
        message = f"The provider answered HTTP {status}."
        err_type = None
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if isinstance(data, list) and data:
            data = data[0]  # some paths wrap the error in a list
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            if isinstance(err.get("message"), str) and err["message"]:
                message = err["message"][:2000]
            err_type = _ERROR_TYPES.get(str(err.get("status")), "server_error")
        return UpstreamStatusError(
            status, message, upstream_type=err_type, headers=retry_headers(headers)
        )


# --- request translation -------------------------------------------------------------


def to_gemini(body: Mapping[str, Any]) -> dict[str, Any]:
    n = body.get("n")
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id → function name, for the results
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
            _append(contents, "user", _user_parts(message.get("content"), i))
        elif role == "assistant":
            _append(contents, "model", _model_parts(message, names))
        elif role in ("tool", "function"):
            call_id = str(message.get("tool_call_id") or "")
            name = names.get(call_id) or str(message.get("name") or "")
            content = message.get("content")
            result = content if isinstance(content, str) else text_of(content)
            try:
                response = json.loads(result)
            except ValueError:
                response = None
            part: dict[str, Any] = {
                "functionResponse": {
                    "name": name,
                    "response": response if isinstance(response, dict) else {"output": result},
                }
            }
            base, _, _ = call_id.partition(SIGNATURE)
            if base and not base.startswith("gemini-call-"):
                part["functionResponse"]["id"] = base
            _append(contents, "user", [part])
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    config: dict[str, Any] = {}
    for field, name in (
        ("temperature", "temperature"), ("top_p", "topP"), ("seed", "seed"),
        ("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty"),
    ):  # fmt: skip
        if isinstance(body.get(field), int | float):
            config[name] = body[field]
    tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(tokens, int):
        config["maxOutputTokens"] = tokens
    if isinstance(n, int) and n > 1:
        config["candidateCount"] = n
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    if stops:
        config["stopSequences"] = [s for s in stops if isinstance(s, str)][:5]
    fmt = body.get("response_format")
    if isinstance(fmt, Mapping) and fmt.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = as_dict(fmt.get("json_schema")).get("schema")
        if isinstance(schema, Mapping):
            config["responseJsonSchema"] = schema
    effort = body.get("reasoning_effort")
    if isinstance(effort, str) and effort in _BUDGETS:
        config["thinkingConfig"] = {"thinkingBudget": _BUDGETS[effort]}
    if config:
        out["generationConfig"] = config
    _tools(body, out)
    return out


def _append(contents: list[dict[str, Any]], role: str, parts: list[dict[str, Any]]) -> None:
    if not parts:
        return
    if contents and contents[-1]["role"] == role:
        contents[-1]["parts"] += parts
    else:
        contents.append({"role": role, "parts": parts})


def _user_parts(content: Any, index: int) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, Mapping):
            continue
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            parts.append({"text": part["text"]})
        elif part.get("type") == "image_url":
            url = as_dict(part.get("image_url")).get("url")
            if not isinstance(url, str) or not url.startswith("data:") or ";base64," not in url:
                raise InvalidRequest(
                    "Gemini takes images as base64 data URLs (data:image/png;base64,...).",
                    param=f"messages[{index}].content",
                )
            head, _, data = url.partition(",")
            parts.append({"inlineData": {"mimeType": head[5:].split(";", 1)[0], "data": data}})
    return parts


def _model_parts(message: Mapping[str, Any], names: dict[str, str]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    text = text_of(message.get("content"))
    if text:
        parts.append({"text": text})
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        function = as_dict(call.get("function")) if isinstance(call, Mapping) else {}
        if not function:
            continue
        call_id = str(call.get("id") or "")
        names[call_id] = str(function.get("name", ""))
        try:
            args = json.loads(function.get("arguments") or "{}")
        except ValueError:
            args = {}
        base, _, signature = call_id.partition(SIGNATURE)
        fc: dict[str, Any] = {
            "name": names[call_id],
            "args": args if isinstance(args, dict) else {},
        }
        if base and not base.startswith("gemini-call-"):
            fc["id"] = base
        part: dict[str, Any] = {"functionCall": fc}
        if signature:
            part["thoughtSignature"] = signature  # Gemini needs its own signature back
        parts.append(part)
    return parts


def _tools(body: Mapping[str, Any], out: dict[str, Any]) -> None:
    tools = body.get("tools")
    declarations = []
    for tool in tools if isinstance(tools, list) else ():
        function = as_dict(tool.get("function")) if isinstance(tool, Mapping) else {}
        if function:
            declaration: dict[str, Any] = {"name": str(function.get("name", ""))}
            if isinstance(function.get("description"), str):
                declaration["description"] = function["description"]
            if isinstance(function.get("parameters"), Mapping):
                declaration["parametersJsonSchema"] = function["parameters"]
            declarations.append(declaration)
    if not declarations:
        return
    out["tools"] = [{"functionDeclarations": declarations}]
    choice = body.get("tool_choice")
    mode: dict[str, Any] | None = None
    if choice == "auto":
        mode = {"mode": "AUTO"}
    elif choice == "none":
        mode = {"mode": "NONE"}
    elif choice == "required":
        mode = {"mode": "ANY"}
    elif isinstance(choice, Mapping):
        name = as_dict(choice.get("function")).get("name")
        if isinstance(name, str):
            mode = {"mode": "ANY", "allowedFunctionNames": [name]}
    if mode is not None:
        out["toolConfig"] = {"functionCallingConfig": mode}


# --- response translation ------------------------------------------------------------


def _parts(parts: Any, first_index: int) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in parts if isinstance(parts, list) else ():
        if not isinstance(part, Mapping):
            continue
        if isinstance(part.get("text"), str):
            (thoughts if part.get("thought") is True else texts).append(part["text"])
        call = part.get("functionCall")
        if isinstance(call, Mapping):
            index = first_index + len(calls)
            call_id = str(call.get("id") or f"gemini-call-{index}")
            if isinstance(part.get("thoughtSignature"), str):
                call_id += SIGNATURE + part["thoughtSignature"]
            calls.append(
                {
                    "index": index,
                    "id": call_id,
                    "type": "function",
                    "function": {
                        "name": str(call.get("name", "")),
                        "arguments": json.dumps(call.get("args") or {}, ensure_ascii=False),
                    },
                }
            )
    return texts, thoughts, calls


class GeminiStreamDecoder:
    """``streamGenerateContent?alt=sse`` responses → OpenAI chunks. The stream has
    no end marker: the end of the body ends it (after a finishReason)."""

    def __init__(self, *, client_wants_usage: bool, clock: Callable[[], float]) -> None:
        self._sse = SSEDecoder()
        self._wants_usage = client_wants_usage
        self._clock = clock
        self._id = ""
        self._model = ""
        self._created = 0
        self._started = False
        self._calls = 0
        self._finished_reason: str | None = None
        self.state = StreamState()

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> Chunk:
        return Chunk(
            data={
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": self._model,
                "choices": [
                    {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
                ],
            }
        )

    def feed(self, data: bytes) -> Batch:
        return Batch([part for e in sse_events(self._sse, data) for part in self._event(e)])

    def end(self) -> Batch:
        parts = [part for e in sse_events(self._sse, None) for part in self._event(e)]
        if self._finished_reason is None:
            raise UpstreamProtocolError("The provider's stream ended before it was complete.")
        self.state.finished = True
        usage = self.state.usage
        if usage is not None and self._wants_usage:
            parts.append(
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
            )
        return Batch(parts)

    def _event(self, event: SSEEvent) -> list[Chunk | bytes]:
        try:
            data = json.loads(event.data)
        except (ValueError, RecursionError):
            raise UpstreamProtocolError("The provider sent a malformed stream event.") from None
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            message = data["error"].get("message")
            raise UpstreamProtocolError(message if isinstance(message, str) else "Stream failed.")
        if not isinstance(data, dict):
            return []
        out: list[Chunk | bytes] = []
        if not self._started:
            self._started = True
            self._id = "chatcmpl-" + str(data.get("responseId", ""))
            self._model = str(data.get("modelVersion", ""))
            self._created = int(self._clock())
            self.state.served_model = self._model or None
            out.append(self._chunk({"role": "assistant", "content": ""}))
        usage = Usage.from_gemini(data.get("usageMetadata"))
        if usage is not None:
            self.state.usage = usage  # the last one is the total
        candidates = data.get("candidates")
        candidate = candidates[0] if isinstance(candidates, list) and candidates else None
        if not isinstance(candidate, dict):
            if as_dict(data.get("promptFeedback")).get("blockReason"):
                self._finished_reason = "content_filter"
                out.append(self._chunk({}, "content_filter"))
            return out
        texts, thoughts, calls = _parts(as_dict(candidate.get("content")).get("parts"), self._calls)
        self._calls += len(calls)
        for text in texts:
            self.state.add_output(json.dumps({"content": text}).encode())
            out.append(self._chunk({"content": text}))
        for thought in thoughts:
            out.append(self._chunk({"reasoning_content": thought}))
        for call in calls:
            self.state.add_output(json.dumps({"arguments": call["function"]["arguments"]}).encode())
            out.append(self._chunk({"tool_calls": [call]}))
        reason = candidate.get("finishReason")
        if reason:
            self._finished_reason = finish_reason(reason, self._calls > 0)
            out.append(self._chunk({}, self._finished_reason))
        return out

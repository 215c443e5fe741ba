"""A fake OpenAI-compatible upstream: a real aiohttp server speaking the wire format.

Scriptable per request: push ``Reply`` objects onto ``script``; with an empty script
it answers like OpenAI would. It records every request it receives.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    #: stream events (dicts are JSON-encoded, bytes sent as-is); None = not a stream
    events: list[Any] | None = None
    #: wait for this event after the first stream event (proves incremental delivery)
    gate: asyncio.Event | None = None
    #: seconds to wait before answering
    delay: float = 0.0
    #: seconds to wait after the first stream event
    pause: float = 0.0
    #: close the connection abruptly: "before" the response, or "mid" stream
    drop: str | None = None


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: Any
    #: every header line as received, repeats included
    raw_headers: list[tuple[str, str]] = field(default_factory=list)

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.raw_headers if k.lower() == name.lower()]


def completion(model: str = "gpt-4o-2024-08-06", text: str = "Hello!", **usage: int) -> dict:
    return {
        "id": "chatcmpl-123",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": usage.get("prompt", 10),
            "completion_tokens": usage.get("completion", 2),
            "total_tokens": usage.get("prompt", 10) + usage.get("completion", 2),
            "prompt_tokens_details": {"cached_tokens": usage.get("cached", 0)},
            "completion_tokens_details": {"reasoning_tokens": usage.get("reasoning", 0)},
        },
    }


def chunk_events(
    model: str = "gpt-4o-2024-08-06",
    pieces: tuple[str, ...] = ("Hel", "lo", "!"),
    include_usage: bool = True,
) -> list[Any]:
    base = {
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
    }
    extra = {"usage": None} if include_usage else {}
    events: list[Any] = [
        {
            **base,
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            ],
            **extra,
        }
    ]
    for piece in pieces:
        events.append(
            {
                **base,
                "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                **extra,
            }
        )
    events.append(
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], **extra}
    )
    if include_usage:
        events.append(
            {
                **base,
                "choices": [],
                "usage": {
                    "prompt_tokens": 10,
                    "completion_tokens": len(pieces),
                    "total_tokens": 10 + len(pieces),
                },
            }
        )
    events.append(b"[DONE]")
    return events


def error_body(message: str, type_: str = "invalid_request_error", code: str | None = None):
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


class FakeOpenAI:
    def __init__(self) -> None:
        self.script: list[Reply] = []
        #: a standing answer for every request to this upstream model (after the script)
        self.by_model: dict[str, Reply] = {}
        self.seen: list[Seen] = []
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self._handle)
        self.app.router.add_post("/v1/embeddings", self._handle)

    @property
    def calls(self) -> int:
        return len(self.seen)

    def calls_to(self, model: str) -> int:
        return sum(1 for s in self.seen if s.body.get("model") == model)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw)
        self.seen.append(
            Seen(request.path, dict(request.headers), body, list(request.headers.items()))
        )
        if self.script:
            reply = self.script.pop(0)
        elif body.get("model") in self.by_model:
            reply = self.by_model[body["model"]]
        else:
            reply = self._default(request.path, body)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.drop == "before":
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        if reply.events is None:
            return web.json_response(reply.body, status=reply.status, headers=reply.headers)
        resp = web.StreamResponse(
            status=reply.status, headers={"content-type": "text/event-stream", **reply.headers}
        )
        await resp.prepare(request)
        for i, event in enumerate(reply.events):
            data = event if isinstance(event, bytes) else json.dumps(event).encode()
            await resp.write(b"data: " + data + b"\n\n")
            if i == 0 and reply.gate is not None:
                await asyncio.wait_for(reply.gate.wait(), 10)
            if i == 0 and reply.pause:
                await asyncio.sleep(reply.pause)
            if i == 1 and reply.drop == "mid":
                assert request.transport is not None
                request.transport.abort()
                return resp
        await resp.write_eof()
        return resp

    def _default(self, path: str, body: dict) -> Reply:
        if path.endswith("/embeddings"):
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            import base64
            import struct

            vec = [0.5, -0.25, 0.125]
            emb: Any = (
                base64.b64encode(struct.pack("<3f", *vec)).decode()
                if body.get("encoding_format") == "base64"
                else vec
            )
            return Reply(
                body={
                    "object": "list",
                    "data": [
                        {"object": "embedding", "index": i, "embedding": emb}
                        for i in range(len(inputs))
                    ],
                    "model": body["model"],
                    "usage": {"prompt_tokens": 4, "total_tokens": 4},
                }
            )
        if body.get("stream"):
            opts = body.get("stream_options") or {}
            return Reply(events=chunk_events(include_usage=bool(opts.get("include_usage"))))
        return Reply(body=completion())


# --- Anthropic -------------------------------------------------------------------------


def anthropic_message(
    text: str = "Hello!",
    *,
    model: str = "claude-sonnet-4-5-20250929",
    tool: dict | None = None,
    stop: str = "end_turn",
    usage: dict | None = None,
) -> dict:
    content: list[dict] = [{"type": "text", "text": text}] if text else []
    if tool is not None:
        content.append({"type": "tool_use", **tool})
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage
        or {
            "input_tokens": 12,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 5,
        },
    }


def anthropic_events(message: dict) -> list[bytes]:
    """The stream the Messages API sends for ``message`` (event + data frames)."""
    usage = dict(message["usage"])
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    frames = [
        ("message_start", {"type": "message_start", "message": start}),
        ("ping", {"type": "ping"}),
    ]
    for i, block in enumerate(message["content"]):
        if block["type"] == "text":
            frames.append(
                (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": i,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
            )
            words = block["text"].split(" ")
            for j, word in enumerate(words):
                piece = word if j == 0 else " " + word
                frames.append(
                    (
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": i,
                            "delta": {"type": "text_delta", "text": piece},
                        },
                    )
                )
        else:
            frames.append(
                (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": i,
                        "content_block": {**block, "input": {}},
                    },
                )
            )
            raw = json.dumps(block["input"])
            for part in (raw[: len(raw) // 2], raw[len(raw) // 2 :]):
                frames.append(
                    (
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": i,
                            "delta": {"type": "input_json_delta", "partial_json": part},
                        },
                    )
                )
        frames.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    frames.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
    )
    frames.append(("message_stop", {"type": "message_stop"}))
    return [f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in frames]


class FakeAnthropic:
    """The Messages API on 127.0.0.1: checks the wire request, answers JSON or SSE."""

    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.seen: list[Seen] = []
        self.app = web.Application()
        self.app.router.add_post("/v1/messages", self._handle)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.read())
        self.seen.append(
            Seen(request.path, dict(request.headers), body, list(request.headers.items()))
        )
        reply = self.script.pop(0) if self.script else Reply(body=anthropic_message())
        if reply.status != 200 or not body.get("stream"):
            data = reply.body if reply.status != 200 else (reply.body or anthropic_message())
            return web.json_response(data, status=reply.status, headers=reply.headers)
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        frames = reply.events if reply.events is not None else anthropic_events(reply.body)
        for i, frame in enumerate(frames):
            await resp.write(frame)
            if i == 1 and reply.drop == "mid":
                assert request.transport is not None
                request.transport.abort()
                return resp
        await resp.write_eof()
        return resp

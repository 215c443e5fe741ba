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
        self.seen.append(Seen(request.path, dict(request.headers), body))
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

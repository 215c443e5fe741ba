"""The built-in ``mock`` provider's brain: OpenAI wire bytes for a request, offline.

Deterministic: the same request gives the same text, tokens and embedding. Token
counts use a simple word/punctuation count, close to a BPE count for English but
not equal to any real tokenizer. ``MockEngine.plan`` is pure; the transport in
``aigateway.mock_transport`` turns a plan into timed bytes.

Error simulation: ``error_rate`` fails an evenly spread share of requests with
``error_status``; a message containing ``[mock:status=429]`` (any 4xx/5xx) makes
that request fail with that status; ``[mock:reply=text]`` fixes the reply text.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import struct
from dataclasses import dataclass, field
from typing import Any

from aigateway.config.model import MockProvider
from aigateway.providers.base import UpstreamRequest, text_of

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_STATUS_RE = re.compile(r"\[mock:status=([45]\d\d)\]")
_REPLY_RE = re.compile(r"\[mock:reply=([^\]]{1,4000})\]")
_REASONS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def count_tokens(text: str) -> int:
    return len(_TOKEN_RE.findall(text))


@dataclass
class MockPlan:
    status: int
    headers: dict[str, str]
    #: whole body, or the stream's events (each already SSE-framed)
    body: bytes = b""
    events: list[bytes] = field(default_factory=list)
    latency_s: float = 0.0
    chunk_delay_s: float = 0.0


class MockEngine:
    def __init__(self, config: MockProvider) -> None:
        self._cfg = config
        self._served = 0

    def plan(self, req: UpstreamRequest, *, now: int) -> MockPlan:
        self._served += 1
        latency = self._cfg.latency_ms / 1000
        try:
            body = json.loads(req.body)
        except ValueError:
            return _error(400, "The request body is not valid JSON.", latency)
        text = _all_text(body)
        forced = _STATUS_RE.search(text)
        if forced:
            status = int(forced.group(1))
            return _error(status, f"Simulated HTTP {status} from the mock provider.", latency)
        if self._fails(self._served):
            status = self._cfg.error_status
            return _error(status, f"Simulated HTTP {status} from the mock provider.", latency)
        if req.url.endswith("/embeddings"):
            return self._embeddings(body, latency)
        return self._chat(body, req.stream, latency, now)

    def _fails(self, n: int) -> bool:
        rate = self._cfg.error_rate
        return rate > 0 and math.floor(n * rate) > math.floor((n - 1) * rate)

    def _chat(self, body: dict[str, Any], stream: bool, latency: float, now: int) -> MockPlan:
        model = str(body.get("model", "mock"))
        messages = body.get("messages") or []
        reply = self._reply(messages)
        words = _TOKEN_RE.findall(reply)
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        finish = "stop"
        if isinstance(limit, int) and 0 < limit < len(words):
            finish = "length"
            reply = " ".join(words[:limit])
        prompt_tokens = (
            sum(
                4 + count_tokens(text_of(m.get("content"), " "))
                for m in messages
                if isinstance(m, dict)
            )
            + 3
        )
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": count_tokens(reply),
            "total_tokens": prompt_tokens + count_tokens(reply),
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }
        cid = (
            "chatcmpl-mock-"
            + hashlib.sha256(
                json.dumps(messages, sort_keys=True, default=str).encode()
            ).hexdigest()[:24]
        )
        if not stream:
            out = {
                "id": cid,
                "object": "chat.completion",
                "created": now,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply, "refusal": None},
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                ],
                "usage": usage,
                "system_fingerprint": "fp_mock",
            }
            return MockPlan(
                200, {"content-type": "application/json"}, _dumps(out), latency_s=latency
            )
        opts = body.get("stream_options")
        include_usage = isinstance(opts, dict) and opts.get("include_usage") is True
        base = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": now,
            "model": model,
            "system_fingerprint": "fp_mock",
        }
        extra = {"usage": None} if include_usage else {}

        def chunk(delta: dict[str, Any], reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
            return b"data: " + _dumps({**base, "choices": [choice], **extra}) + b"\n\n"

        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": piece}) for piece in _split(reply, self._cfg.stream_chunks)]
        events.append(chunk({}, finish))
        if include_usage:
            events.append(b"data: " + _dumps({**base, "choices": [], "usage": usage}) + b"\n\n")
        events.append(b"data: [DONE]\n\n")
        return MockPlan(
            200,
            {"content-type": "text/event-stream"},
            events=events,
            latency_s=latency,
            chunk_delay_s=self._cfg.chunk_delay_ms / 1000,
        )

    def _reply(self, messages: list[Any]) -> str:
        last = next(
            (
                text_of(m.get("content"), " ")
                for m in reversed(messages)
                if isinstance(m, dict) and m.get("role") == "user"
            ),
            "",
        )
        fixed = _REPLY_RE.search(last)
        if fixed:
            return fixed.group(1)
        if self._cfg.reply is not None:
            return self._cfg.reply
        quoted = " ".join(last.split())[:80]
        return f"This is a mock response from aigateway. You said: {quoted}"

    def _embeddings(self, body: dict[str, Any], latency: float) -> MockPlan:
        inputs = body.get("input")
        items = (
            [inputs]
            if isinstance(inputs, str)
            or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int))
            else list(inputs or [])
        )
        dims = body.get("dimensions") or self._cfg.embedding_dimensions
        as_b64 = body.get("encoding_format") == "base64"
        data, tokens = [], 0
        for i, item in enumerate(items):
            text = item if isinstance(item, str) else " ".join(map(str, item))
            tokens += count_tokens(text) if isinstance(item, str) else len(item)
            vector = _vector(text, int(dims))
            embedding: Any = (
                base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
                if as_b64
                else vector
            )
            data.append({"object": "embedding", "index": i, "embedding": embedding})
        out = {
            "object": "list",
            "data": data,
            "model": str(body.get("model", "mock")),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return MockPlan(200, {"content-type": "application/json"}, _dumps(out), latency_s=latency)


_WORD = re.compile(r"\w+")


def _vector(text: str, dims: int) -> list[float]:
    """A bag of words, hashed into ``dims`` (texts that share words point the same
    way, as real embeddings of similar texts do); text without words: a hash."""
    values = [0.0] * dims
    for word in _WORD.findall(text.lower()):
        h = hashlib.blake2b(word.encode(), digest_size=8).digest()
        values[int.from_bytes(h[:4], "little") % dims] += 1.0 if h[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in values))
    if norm:
        return [round(v / norm, 6) for v in values]
    return _hashed(text, dims)


def _hashed(text: str, dims: int) -> list[float]:
    raw = b""
    counter = 0
    while len(raw) < dims * 2:
        raw += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    values = [(int.from_bytes(raw[2 * i : 2 * i + 2], "little") / 32767.5) - 1 for i in range(dims)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


def _error(status: int, message: str, latency: float) -> MockPlan:
    body = {
        "error": {
            "message": message,
            "type": _REASONS.get(status, "server_error"),
            "param": None,
            "code": None,
        }
    }
    headers = {"content-type": "application/json"}
    if status == 429:
        headers["retry-after"] = "1"
    return MockPlan(status, headers, _dumps(body), latency_s=latency)


def _all_text(body: Any) -> str:
    if not isinstance(body, dict):
        return ""
    parts = [
        text_of(m.get("content"), " ") for m in body.get("messages") or [] if isinstance(m, dict)
    ]
    inputs = body.get("input")
    if isinstance(inputs, str):
        parts.append(inputs)
    elif isinstance(inputs, list):
        parts += [x for x in inputs if isinstance(x, str)]
    return "\n".join(parts)


def _split(text: str, n: int) -> list[str]:
    """Split text into at most n pieces at word boundaries (all non-empty)."""
    words = re.findall(r"\S+\s*", text)
    if not words:
        return [text] if text else []
    n = min(n, len(words))
    size, extra = divmod(len(words), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        out.append("".join(words[start:end]))
        start = end
    return out


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()

"""Exact-match response cache: the same request to the same route from the same
project is answered once, then from the cache until the entry's TTL runs out.

Opt-in per route (``models.X.cache``) or project (``projects.X.cache``; the route's
setting wins); a caller may send ``x-aigateway-cache: no-store`` (neither read nor
write) or ``refresh`` (skip the read, store the new answer). The key hashes the
project, the route, the endpoint and the request body without the fields that do
not change the answer (``stream``, ``stream_options``, ``user``, ...), so tenants
never share entries. Whole answers and completed streams are stored; a hit is
served as JSON or, to a streaming caller, as a valid SSE stream. A hit costs $0,
uses no tokens (rate limits count it as a request), and says
``x-aigateway-cache: hit``. Chat completions and embeddings; not ``/v1/messages``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any

from aigateway.cache_store import CacheStore
from aigateway.config.model import CacheConfig, GatewayConfig, RouteCache
from aigateway.metrics import Metrics
from aigateway.pipeline import Handler, JsonReply, Reply, RequestContext, StreamReply
from aigateway.providers.base import Batch, Chunk
from aigateway.wire import Usage

#: request fields that do not change the answer
_IGNORED = frozenset({"stream", "stream_options", "user", "metadata", "store", "safety_identifier"})
Spawn = Callable[[str, Coroutine[Any, Any, Any]], object]


class Cache:
    def __init__(
        self,
        config: GatewayConfig,
        store: CacheStore,
        *,
        metrics: Metrics,
        cost: Callable[[RequestContext, Usage | None], Decimal | None],
        spawn: Spawn,
    ) -> None:
        self._config = config
        self._settings: CacheConfig = config.cache
        self._store = store
        self._metrics = metrics
        self._cost = cost
        self._spawn = spawn

    def _rule(self, ctx: RequestContext) -> RouteCache | None:
        if ctx.endpoint == "messages" or ctx.route is None:
            return None
        if ctx.route.cache is not None:
            return ctx.route.cache
        return ctx.project.cache if ctx.project is not None else None

    async def __call__(self, ctx: RequestContext, call_next: Handler) -> Reply:
        rule = self._rule(ctx)
        directive = ctx.headers.get("x-aigateway-cache", "").strip().lower()
        if rule is None or directive == "no-store":
            return await call_next(ctx)
        key = self._key(ctx)
        route = ctx.route_name or "-"
        if directive != "refresh":
            raw = await self._store.get(key)
            if raw is not None:
                return self._hit(ctx, raw)
        ctx.response_headers["x-aigateway-cache"] = "miss"
        self._metrics.cache.inc((route, "miss"))
        reply = await call_next(ctx)
        if isinstance(reply, JsonReply):
            if reply.status == 200:
                self._put(key, reply.body, ctx, rule.ttl_s)
            return reply
        _collect(reply, lambda answer: self._put(key, answer, ctx, rule.ttl_s))
        return reply

    def _key(self, ctx: RequestContext) -> str:
        body = {k: v for k, v in ctx.body.items() if k not in _IGNORED}
        if ctx.max_tokens_by_gateway:
            body.pop("max_tokens", None)  # set from the remaining budget: not the caller's
        material = json.dumps(
            [ctx.project_name, ctx.route_name, ctx.endpoint, body],
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            default=str,
        )
        return hashlib.sha256(material.encode()).hexdigest()

    def _put(self, key: str, answer: dict[str, Any], ctx: RequestContext, ttl_s: float) -> None:
        cost = self._cost(ctx, ctx.usage) if ctx.usage is not None else None
        entry = json.dumps(
            {"answer": answer, "model": ctx.served_model, "cost": float(cost or 0)},
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()
        if len(entry) <= self._settings.max_entry_bytes:
            self._spawn("cache-put", self._store.put(key, entry, ttl_s))

    def _hit(self, ctx: RequestContext, raw: bytes) -> Reply:
        entry = json.loads(raw)
        answer: dict[str, Any] = entry["answer"]
        route, project = ctx.route_name or "-", ctx.project_name or "-"
        self._metrics.cache.inc((route, "hit"))
        self._metrics.cache_saved.inc((project, route), float(entry.get("cost") or 0))
        ctx.cache_hit = True
        ctx.cost_usd = Decimal(0)  # nothing was spent
        ctx.served_model = entry.get("model")
        ctx.response_headers["x-aigateway-cache"] = "hit"
        if isinstance(answer.get("usage"), dict):
            answer["usage"]["cost"] = 0.0
        if ctx.stream:
            return StreamReply(_Replay(_chunks(answer, ctx.client_wants_usage)))
        return JsonReply(200, answer)


def _collect(reply: StreamReply, store: Callable[[dict[str, Any]], None]) -> None:
    """Assemble a streamed answer as a whole chat completion, stored if it ends well."""
    parts: dict[str, Any] = {"content": [], "tools": {}, "finish": None, "id": "", "model": ""}

    def on_batch(batch: Batch) -> None:
        for chunk in batch.all_chunks():
            data = chunk.data
            parts["id"] = parts["id"] or data.get("id", "")
            parts["model"] = parts["model"] or data.get("model", "")
            for choice in data.get("choices") or ():
                delta = choice.get("delta") or {}
                if isinstance(delta.get("content"), str):
                    parts["content"].append(delta["content"])
                for call in delta.get("tool_calls") or ():
                    slot = parts["tools"].setdefault(
                        call.get("index", 0), {"id": "", "name": "", "arguments": []}
                    )
                    slot["id"] = call.get("id") or slot["id"]
                    function = call.get("function") or {}
                    slot["name"] = function.get("name") or slot["name"]
                    slot["arguments"].append(function.get("arguments") or "")
                if choice.get("finish_reason"):
                    parts["finish"] = choice["finish_reason"]

    def on_end(status: int, error: str | None) -> None:
        if status != 200 or parts["finish"] is None:
            return  # cut short or failed: nothing worth keeping
        message: dict[str, Any] = {"role": "assistant", "content": "".join(parts["content"])}
        if parts["tools"]:
            message["tool_calls"] = [
                {"id": t["id"], "type": "function",
                 "function": {"name": t["name"], "arguments": "".join(t["arguments"])}}
                for _, t in sorted(parts["tools"].items())
            ]  # fmt: skip
        store(
            {
                "id": parts["id"],
                "object": "chat.completion",
                "created": 0,
                "model": parts["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": parts["finish"],
                        "logprobs": None,
                    }
                ],
            }
        )

    reply.on_batch.append(on_batch)
    reply.on_end.append(on_end)


def _chunks(answer: dict[str, Any], with_usage: bool) -> list[Chunk | bytes]:
    """A whole chat completion as the chunks of a stream."""
    base = {
        "id": answer.get("id", ""),
        "object": "chat.completion.chunk",
        "created": answer.get("created", 0),
        "model": answer.get("model", ""),
    }
    out: list[Chunk | bytes] = []
    for choice in answer.get("choices") or ():
        index = choice.get("index", 0)
        message = choice.get("message") or {}
        deltas: list[tuple[dict[str, Any], str | None]] = [
            ({"role": "assistant", "content": ""}, None)
        ]
        if message.get("content"):
            deltas.append(({"content": message["content"]}, None))
        for i, call in enumerate(message.get("tool_calls") or ()):
            deltas.append(({"tool_calls": [{"index": i, **call}]}, None))
        deltas.append(({}, choice.get("finish_reason") or "stop"))
        for delta, finish in deltas:
            row = {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
            out.append(Chunk(data={**base, "choices": [row]}))
    if with_usage and isinstance(answer.get("usage"), dict):
        out.append(Chunk(data={**base, "choices": [], "usage": answer["usage"]}))
    return out


class _Replay:
    """A cached answer served as a stream: one batch, then the end."""

    def __init__(self, parts: list[Chunk | bytes]) -> None:
        self._parts: list[Chunk | bytes] | None = parts
        self.finished = False

    async def next(self) -> Batch | None:
        if self._parts is None:
            return None
        parts, self._parts = self._parts, None
        self.finished = True
        return Batch(parts)

    async def aclose(self) -> None:
        self._parts = None

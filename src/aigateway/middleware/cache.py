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

With ``semantic``, a chat request that misses is also compared with the cached
requests of the same conversation (``middleware.semantic``): a last message as
similar as the threshold takes that answer, and says how similar in
``x-aigateway-cache-similarity``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any

from aigateway.cache_store import CacheStore
from aigateway.config.model import CacheConfig, GatewayConfig, Key, RouteCache
from aigateway.metrics import Metrics
from aigateway.middleware.semantic import Probe, SemanticLookup
from aigateway.pipeline import Handler, JsonReply, Reply, RequestContext, StreamReply
from aigateway.providers.base import Batch, Chunk
from aigateway.usage import Usage

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
        semantic: SemanticLookup | None = None,
    ) -> None:
        self._config = config
        self._settings: CacheConfig = config.cache
        self._store = store
        self._metrics = metrics
        self._cost = cost
        self._spawn = spawn
        self._semantic = semantic

    def applies(self, key: Key, route: str) -> bool:
        route_cfg = self._config.models.get(route)
        project = self._config.projects.get(key.project)
        return (route_cfg is not None and route_cfg.cache is not None) or (
            project is not None and project.cache is not None
        )

    async def __call__(self, ctx: RequestContext, call_next: Handler) -> Reply:
        rule = cache_rule(ctx)
        directive = ctx.headers.get("x-aigateway-cache", "").strip().lower()
        if rule is None or directive == "no-store":
            return await call_next(ctx)
        body = self._significant(ctx)
        key = self._key(ctx, body)
        route = ctx.route_name or "-"
        if directive != "refresh":
            raw = await self._store.get(key)
            if raw is not None:
                return self._hit(ctx, raw)
        # embedded for the lookup, or (refresh) to be stored with the new answer
        probe = await self._probe(ctx, rule, body)
        if probe is not None and directive != "refresh":
            hit = await self._similar(ctx, probe, rule)
            if hit is not None:
                return hit
        ctx.response_headers["x-aigateway-cache"] = "miss"
        self._metrics.cache.inc((route, "miss"))
        reply = await call_next(ctx)
        if isinstance(reply, JsonReply):
            if reply.status == 200:
                self._put(key, reply.body, ctx, rule, probe)
            return reply
        _collect(reply, lambda answer: self._put(key, answer, ctx, rule, probe))
        return reply

    async def _probe(
        self, ctx: RequestContext, rule: RouteCache, body: dict[str, Any]
    ) -> Probe | None:
        """The request embedded for the semantic cache, if it has one and can."""
        if rule.semantic is None or self._semantic is None:
            return None
        probe = self._semantic.probe(ctx, rule.semantic, body)
        if probe is None or not await self._semantic.embed(ctx, probe, rule.semantic):
            return None
        return probe

    async def _similar(self, ctx: RequestContext, probe: Probe, rule: RouteCache) -> Reply | None:
        assert rule.semantic is not None and self._semantic is not None
        found = await self._semantic.nearest(probe, rule.semantic)
        raw = await self._store.get(found[0]) if found is not None else None
        if found is None or raw is None:
            return None
        return self._hit(ctx, raw, similarity=found[1])

    def _significant(self, ctx: RequestContext) -> dict[str, Any]:
        """The request body without what does not change the answer."""
        body = {k: v for k, v in ctx.body.items() if k not in _IGNORED}
        if ctx.max_tokens_by_gateway:
            body.pop("max_tokens", None)  # set from the remaining budget: not the caller's
        return body

    def _key(self, ctx: RequestContext, body: dict[str, Any]) -> str:
        material = json.dumps(
            [ctx.project_name, ctx.route_name, ctx.endpoint, body],
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            default=str,
        )
        return hashlib.sha256(material.encode()).hexdigest()

    def _put(
        self,
        key: str,
        answer: dict[str, Any],
        ctx: RequestContext,
        rule: RouteCache,
        probe: Probe | None,
    ) -> None:
        cost = self._cost(ctx, ctx.usage) if ctx.usage is not None else None
        entry = json.dumps(
            {"answer": answer, "model": ctx.served_model, "cost": float(cost or 0)},
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()
        if len(entry) > self._settings.max_entry_bytes:
            return
        self._spawn("cache-put", self._store.put(key, entry, rule.ttl_s))
        if probe is not None and rule.semantic is not None and self._semantic is not None:
            self._spawn("cache-put", self._semantic.add(probe, key, rule.ttl_s, rule.semantic))

    def _hit(self, ctx: RequestContext, raw: bytes, similarity: float | None = None) -> Reply:
        entry = json.loads(raw)
        answer: dict[str, Any] = entry["answer"]
        route, project = ctx.route_name or "-", ctx.project_name or "-"
        self._metrics.cache.inc((route, "hit" if similarity is None else "semantic_hit"))
        self._metrics.cache_saved.inc((project, route), float(entry.get("cost") or 0))
        ctx.cache_hit = True
        ctx.cost_usd = ctx.lookup_cost_usd  # nothing was spent but the lookup's embedding
        ctx.served_model = entry.get("model")
        ctx.response_headers["x-aigateway-cache"] = "hit"
        if similarity is not None:
            ctx.response_headers["x-aigateway-cache-similarity"] = f"{similarity:.4f}"
        if isinstance(answer.get("usage"), dict):
            answer["usage"]["cost"] = float(ctx.lookup_cost_usd)
        if ctx.stream:
            return StreamReply(_Replay(_chunks(answer, ctx.client_wants_usage)))
        return JsonReply(200, answer)


def cache_rule(ctx: RequestContext) -> RouteCache | None:
    """The cache settings that apply to a request: its route's, else its project's."""
    if ctx.endpoint == "messages" or ctx.route is None:
        return None
    if ctx.route.cache is not None:
        return ctx.route.cache
    return ctx.project.cache if ctx.project is not None else None


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

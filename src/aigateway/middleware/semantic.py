"""The semantic cache's half of a lookup: which cached answers a request may take,
and the embedding of what it asks.

A chat request's *partition* is everything but its last message's text, exactly:
project, route, the conversation before the last message, the last message's
role and every parameter that changes the answer. Only the last message's text
is embedded (by the route ``semantic.embeddings`` names) and compared, so a long
shared system prompt cannot make different questions look alike, and a cached
answer is never served to another conversation or tenant.

The embedding is a real provider call on the caller's behalf: its cost and
tokens are added to the request's (``lookup_cost_usd``, ``lookup_tokens``), and
its time counts as upstream time, not gateway overhead. If it fails, the request
is a cache miss and goes on; the failure is counted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import structlog

from aigateway.config.model import Route, SemanticCache
from aigateway.errors import GatewayError
from aigateway.metrics import Metrics
from aigateway.pipeline import Handler, JsonReply, RequestContext
from aigateway.semantic_store import SemanticStore, Vector, dimensions, unit
from aigateway.usage import Usage

#: longer last messages are not embedded (embedding models take ~8k tokens)
MAX_TEXT_CHARS = 16_000
_log = structlog.get_logger("aigateway.cache")


@dataclass(slots=True)
class Probe:
    partition: str
    text: str
    vector: Vector | None = None


async def _no_body() -> bytes:
    return b""


class SemanticLookup:
    def __init__(
        self,
        store: SemanticStore,
        routes: Mapping[str, Route],
        *,
        embed: Handler,
        cost: Callable[[RequestContext, Usage | None], Decimal | None],
        metrics: Metrics,
    ) -> None:
        self._store = store
        self._routes = routes
        #: the pipeline's terminal (targets, retries, adapters) for the embedding call
        self._embed = embed
        self._cost = cost
        self._metrics = metrics

    def probe(self, ctx: RequestContext, rule: SemanticCache, body: dict[str, Any]) -> Probe | None:
        """``body``: the request without the fields that do not change the answer.
        None when the request cannot be compared (not a chat, no plain-text last
        message, or one too long to embed)."""
        messages = body.get("messages")
        if ctx.endpoint != "chat" or not isinstance(messages, list) or not messages:
            return None
        last = messages[-1]
        text = _plain_text(last.get("content")) if isinstance(last, dict) else None
        if text is None or not text.strip() or len(text) > MAX_TEXT_CHARS:
            return None
        rest = {k: v for k, v in body.items() if k != "messages"}
        head = {k: v for k, v in last.items() if k != "content"}
        material = json.dumps(
            [ctx.project_name, ctx.route_name, rule.embeddings, messages[:-1], head, rest],
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            default=str,
        )
        return Probe(hashlib.sha256(material.encode()).hexdigest(), text)

    async def embed(self, ctx: RequestContext, probe: Probe, rule: SemanticCache) -> bool:
        """Set ``probe.vector``; False if the embedding could not be had."""
        sub = RequestContext(ctx.request_id, "embeddings", ctx.headers, _no_body)
        sub.key, sub.project_name, sub.project = ctx.key, ctx.project_name, ctx.project
        sub.route_name, sub.route = rule.embeddings, self._routes[rule.embeddings]
        # base64 (what the OpenAI SDK asks by default): 1/4 of the bytes of the
        # numbers, and decoding it costs a tenth of parsing 1,536 floats
        sub.body = {"model": rule.embeddings, "input": probe.text, "encoding_format": "base64"}
        try:
            reply = await self._embed(sub)
        except GatewayError as exc:
            self._failed(ctx, exc.error_class)
            return False
        finally:
            ctx.upstream_s += sub.upstream_s
            if sub.usage is not None:
                ctx.lookup_cost_usd += self._cost(sub, sub.usage) or Decimal(0)
                ctx.lookup_tokens += sub.usage.total_tokens
        data = reply.body.get("data") if isinstance(reply, JsonReply) else None
        first = data[0] if isinstance(data, list) and data else None
        values = first.get("embedding") if isinstance(first, dict) else None
        vector = unit(values) if isinstance(values, (list, str)) else None
        if vector is None:
            self._failed(ctx, "NoEmbedding")
            return False
        probe.vector = vector
        return True

    async def nearest(self, probe: Probe, rule: SemanticCache) -> tuple[str, float] | None:
        """The most similar cached message's answer key, if it reaches the threshold."""
        assert probe.vector is not None
        found = await self._store.nearest(_sized(probe), probe.vector)
        if found is None or found[1] < rule.threshold:
            return None
        return found

    async def add(self, probe: Probe, key: str, ttl_s: float, rule: SemanticCache) -> None:
        if probe.vector is not None:
            await self._store.add(_sized(probe), key, probe.vector, ttl_s, rule.max_entries)

    def _failed(self, ctx: RequestContext, error_class: str) -> None:
        self._metrics.cache.inc((ctx.route_name or "-", "semantic_error"))
        _log.warning("semantic cache lookup failed", route=ctx.route_name, error=error_class)


def _sized(probe: Probe) -> str:
    """Vectors of one size only are compared (another embeddings model, another size)."""
    assert probe.vector is not None
    return f"{probe.partition}:{dimensions(probe.vector)}"


def _plain_text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        for p in content
    ):
        return "\n".join(p["text"] for p in content)
    return None

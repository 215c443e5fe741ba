"""The request pipeline: a context, two kinds of reply, and a chain of middlewares.

The chain lives inside one aiohttp handler (aiohttp freezes ``app.middlewares`` at
start-up; ours is rebuilt with every config). A middleware is a small object
configured once, called as ``await mw(ctx, call_next)``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import Any, Literal, Protocol

from aigateway.config.model import Key, Project, Route, Target
from aigateway.providers.base import Batch
from aigateway.usage import Usage

Endpoint = Literal["chat", "embeddings", "messages"]
#: status recorded when the caller went away before the response was complete
CLIENT_CLOSED = 499
_ZERO = Decimal(0)


# The per-request classes below write their ``__init__`` out: compiled, a
# dataclass's generated one stays interpreted and costs ~1 µs a call, the written
# one ~50 ns. tests/test_pipeline.py checks each against its fields.


@dataclass(slots=True)
class Attempt:
    provider: str
    model: str
    status: int | None = None
    error_class: str | None = None
    latency_s: float = 0.0

    def __init__(
        self,
        provider: str,
        model: str,
        status: int | None = None,
        error_class: str | None = None,
        latency_s: float = 0.0,
    ) -> None:
        self.provider = provider
        self.model = model
        self.status = status
        self.error_class = error_class
        self.latency_s = latency_s


@dataclass(slots=True)
class RequestContext:
    request_id: str
    endpoint: Endpoint
    headers: Mapping[str, str]
    #: reads the request body (bounded by server.max_body_bytes)
    read_body: Callable[[], Awaitable[bytes]]
    started: float = field(default_factory=time.perf_counter)
    # set by auth
    key: Key | None = None
    project_name: str | None = None
    project: Project | None = None
    #: route names the key may use; None = all
    allowed_routes: frozenset[str] | None = None
    # set by parse
    body: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    client_wants_usage: bool = False
    #: /v1/messages: the caller's Anthropic request as sent (``body`` holds it
    #: translated to a chat request, for everything but an Anthropic target)
    anthropic_body: dict[str, Any] | None = None
    #: "anthropic" when the reply is already in the caller's Anthropic format
    reply_format: Literal["openai", "anthropic"] = "openai"
    #: answered from the response cache
    cache_hit: bool = False
    #: what the semantic cache's embedding of the request cost (part of the request's)
    lookup_cost_usd: Decimal = _ZERO
    lookup_tokens: int = 0
    #: the gateway set max_tokens (from a budget), the caller did not
    max_tokens_by_gateway: bool = False
    #: guardrail hits, "direction:rule:action" (never the matched text)
    guardrail_hits: list[str] = field(default_factory=list)
    # set by route
    route_name: str | None = None
    route: Route | None = None
    #: for a wildcard route "prefix/*": what followed the prefix (the upstream model)
    wildcard: str | None = None
    # set by the proxy
    target: Target | None = None
    served_model: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    usage: Usage | None = None
    #: the usage was counted by the gateway (the provider sent none, or the stream
    #: was cut), not reported by the provider
    usage_estimated: bool = False
    #: prompt tokens counted offline before sending (when limits needed it)
    prompt_tokens_est: int | None = None
    #: what the request cost in USD; None while unknown or when the model is unpriced
    cost_usd: Decimal | None = None
    upstream_s: float = 0.0
    first_byte_s: float | None = None
    status: int = 0
    error_class: str | None = None
    response_headers: dict[str, str] = field(default_factory=dict)

    def __init__(
        self,
        request_id: str,
        endpoint: Endpoint,
        headers: Mapping[str, str],
        read_body: Callable[[], Awaitable[bytes]],
        *,
        body: dict[str, Any] | None = None,
    ) -> None:
        self.request_id = request_id
        self.endpoint = endpoint
        self.headers = headers
        self.read_body = read_body
        self.started = time.perf_counter()
        self.key = None
        self.project_name = None
        self.project = None
        self.allowed_routes = None
        self.body = {} if body is None else body
        self.stream = False
        self.client_wants_usage = False
        self.anthropic_body = None
        self.reply_format = "openai"
        self.cache_hit = False
        self.lookup_cost_usd = _ZERO
        self.lookup_tokens = 0
        self.max_tokens_by_gateway = False
        self.guardrail_hits = []
        self.route_name = None
        self.route = None
        self.wildcard = None
        self.target = None
        self.served_model = None
        self.attempts = []
        self.usage = None
        self.usage_estimated = False
        self.prompt_tokens_est = None
        self.cost_usd = None
        self.upstream_s = 0.0
        self.first_byte_s = None
        self.status = 0
        self.error_class = None
        self.response_headers = {}

    @property
    def is_chat(self) -> bool:
        """A conversation (chat completions or Anthropic messages), not embeddings."""
        return self.endpoint != "embeddings"

    def overhead_ms(self) -> float:
        """Wall time so far minus time spent waiting on upstreams."""
        return max(0.0, (time.perf_counter() - self.started - self.upstream_s) * 1000)


@dataclass(slots=True)
class JsonReply:
    status: int
    body: dict[str, Any]
    #: the body's JSON when it is exactly ``body`` (saves re-encoding)
    raw: bytes | None = None

    def __init__(self, status: int, body: dict[str, Any], raw: bytes | None = None) -> None:
        self.status = status
        self.body = body
        self.raw = raw


@dataclass(slots=True)
class StreamReply:
    """A stream of batches; the handler writes ``data: [DONE]`` if it ends cleanly.

    Middlewares that must see a stream do not wrap it (a layer per chunk); they
    register hooks the handler calls: ``on_batch`` for every batch before it is
    written, ``on_end(status, error_class)`` once, after the stream is closed,
    in the order registered (inner middlewares first), before the last bytes are
    written (then ``before_tail``). ``status`` is 200 for a stream delivered whole,
    the error's status for a stream that broke, and 499 when the caller went away.
    """

    stream: BatchStream
    on_batch: list[Callable[[Batch], None]] = field(default_factory=list)
    on_end: list[Callable[[int, str | None], None]] = field(default_factory=list)
    #: awaited after ``on_end`` and before the stream's last bytes are written
    #: (the prompt log's commit, with durability strict); not when the caller left
    before_tail: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def __init__(self, stream: BatchStream) -> None:
        self.stream = stream
        self.on_batch = []
        self.on_end = []
        self.before_tail = []


class BatchStream(Protocol):
    """The body of a streamed reply, pulled by the handler one batch at a time.

    Each batch holds what one upstream read produced and is sent at once (never
    held back waiting for more). ``next()`` returns None when the stream ended
    cleanly; a ``GatewayError`` from it after bytes were sent ends the stream with
    an error event and no ``[DONE]``. The handler always calls ``aclose()``, once,
    whether the stream ended, failed or the caller went away.
    (Plain objects, not async generators: this runs for every chunk.)
    """

    @property
    def finished(self) -> bool:
        """True once the upstream ended cleanly: the batch ``next()`` just returned
        was the last one (its write can carry the end of the response)."""
        ...

    async def next(self) -> Batch | None: ...

    async def aclose(self) -> None: ...


Reply = JsonReply | StreamReply
Handler = Callable[[RequestContext], Awaitable[Reply]]


class Middleware(Protocol):
    async def __call__(self, ctx: RequestContext, call_next: Handler) -> Reply: ...


def build_chain(middlewares: Sequence[Middleware], terminal: Handler) -> Handler:
    """Wrap ``terminal`` in the middlewares, the first one outermost.

    Each layer is ``partial(mw, call_next=...)``: calling it returns the
    middleware's own coroutine, so a layer costs one coroutine per request, not two.
    """
    handler = terminal
    for mw in reversed(middlewares):
        handler = partial(mw, call_next=handler)
    return handler


class Selective(Middleware, Protocol):
    """A middleware that has work for some keys and routes only."""

    def applies(self, key: Key, route: str) -> bool:
        """Whether it may act on a request of this key for this route (a False here
        lets the request skip it; True may still pass a request on untouched)."""
        ...


#: (key, route) chains kept by ``ByKeyAndRoute``: far more than configs name
MAX_CHAINS = 10_000


class ByKeyAndRoute:
    """The inner end of the chain: for each key and route, a chain of just the
    middlewares that apply to it, built on first use. A project with guardrails
    or limits then costs nothing to the routes and keys that have none.

    Called after routing (``ctx.key`` and ``ctx.route_name`` set); it returns the
    chosen chain's coroutine rather than being one, so it adds no layer itself.
    """

    def __init__(self, middlewares: Sequence[Selective], terminal: Handler) -> None:
        self._middlewares = middlewares
        self._terminal = terminal
        self._everything = build_chain(middlewares, terminal)
        self._chains: dict[tuple[str, str], Handler] = {}

    def __call__(self, ctx: RequestContext) -> Awaitable[Reply]:
        key, route = ctx.key, ctx.route_name
        if key is None or route is None:
            return self._everything(ctx)
        chain = self._chains.get((key.id, route))
        if chain is None:
            if len(self._chains) >= MAX_CHAINS:
                self._chains.clear()
            chain = self._chains[(key.id, route)] = build_chain(
                [mw for mw in self._middlewares if mw.applies(key, route)], self._terminal
            )
        return chain(ctx)

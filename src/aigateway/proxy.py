"""The chain's terminal: send the request to the route's targets, in order.

A target that fails before any byte reached the caller hands over to the next one
(when the failure is one another target may not share: connect errors, timeouts,
429/5xx, or a provider refusing our credentials). Once the first chunk of a stream
is handed to the caller there is no retry: a later failure ends the stream with an
error event.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from aigateway.config.model import Target, Timeouts
from aigateway.errors import GatewayError, UpstreamError, UpstreamStatusError
from aigateway.pipeline import Attempt, JsonReply, Reply, RequestContext, StreamReply
from aigateway.providers.base import Batch, ProviderAdapter, StreamDecoder
from aigateway.scrub import scrub
from aigateway.upstream import MAX_ERROR_BYTES, Transport, UpstreamResponse

_FALLBACK_STATUSES = frozenset({401, 403, 404})


@dataclass(frozen=True, slots=True)
class ProviderHandle:
    name: str
    adapter: ProviderAdapter
    transport: Transport
    timeouts: Timeouts
    #: secrets this provider may echo back; removed from anything passed on
    secrets: tuple[str, ...]


def _may_fall_back(exc: GatewayError) -> bool:
    if exc.retryable:
        return True
    return isinstance(exc, UpstreamStatusError) and exc.upstream_status in _FALLBACK_STATUSES


class Proxy:
    def __init__(self, providers: Mapping[str, ProviderHandle]) -> None:
        self._providers = providers

    async def __call__(self, ctx: RequestContext) -> Reply:
        assert ctx.route is not None
        targets = ctx.route.targets
        for i, target in enumerate(targets):
            try:
                return await self._attempt(ctx, target)
            except GatewayError as exc:
                if i + 1 < len(targets) and _may_fall_back(exc):
                    continue
                exc.headers["x-aigateway-attempts"] = str(len(ctx.attempts))
                if len(ctx.attempts) > 1:
                    exc.headers["x-should-retry"] = "false"  # the gateway already tried
                raise
        raise AssertionError("a route has at least one target")  # pragma: no cover

    async def _attempt(self, ctx: RequestContext, target: Target) -> Reply:
        handle = self._providers[target.provider]
        attempt = Attempt(target.provider, target.model)
        ctx.attempts.append(attempt)
        ctx.target = target
        secrets = handle.secrets
        api_key = None
        if ctx.project is not None:
            override = ctx.project.provider_keys.get(target.provider)
            if override is not None:
                api_key = override.get_secret_value()
                secrets = (*secrets, api_key)
        adapter = handle.adapter
        if ctx.endpoint == "chat":
            req = adapter.chat_request(ctx.body, target.model, stream=ctx.stream, api_key=api_key)
        else:
            req = adapter.embeddings_request(ctx.body, target.model, api_key=api_key)
        started = time.perf_counter()
        handed_off = False
        resp: UpstreamResponse | None = None
        try:
            resp = await handle.transport.open(req, handle.timeouts)
            attempt.status = resp.status
            if not 200 <= resp.status < 300:
                body = await resp.read(MAX_ERROR_BYTES)
                raise adapter.error(resp.status, resp.headers, body)
            if req.stream:
                decoder = adapter.stream_decoder(client_wants_usage=ctx.client_wants_usage)
                first = await _first_batch(resp, decoder)
                ctx.first_byte_s = time.perf_counter() - ctx.started
                _served(ctx, handle.name, decoder.state.served_model or target.model)
                handed_off = True
                return StreamReply(_Relay(ctx, resp, decoder, first, secrets))
            body = await resp.read()
            parsed = (
                adapter.parse_chat(body)
                if ctx.endpoint == "chat"
                else (adapter.parse_embeddings(body))
            )
            ctx.usage = parsed.usage
            _served(ctx, handle.name, parsed.served_model or target.model)
            return JsonReply(200, parsed.body, parsed.raw)
        except GatewayError as exc:
            attempt.error_class = exc.error_class
            exc.message = scrub(exc.message, secrets)
            raise
        finally:
            elapsed = time.perf_counter() - started
            attempt.latency_s = elapsed
            ctx.upstream_s += elapsed
            if not handed_off and resp is not None:
                resp.release()


def _served(ctx: RequestContext, provider: str, model: str) -> None:
    ctx.served_model = model
    ctx.response_headers["x-aigateway-provider"] = provider
    ctx.response_headers["x-aigateway-model"] = _header_safe(model)
    ctx.response_headers["x-aigateway-attempts"] = str(len(ctx.attempts))


def _header_safe(value: str) -> str:
    """Upstream text in a header must not carry CR, LF or NUL (aiohttp drops the connection)."""
    return value if value.isprintable() else "".join(c for c in value if c.isprintable())


async def _first_batch(resp: UpstreamResponse, decoder: StreamDecoder) -> Batch:
    """Read until the stream has something for the caller (or ends)."""
    while data := await resp.read_chunk():
        batch = decoder.feed(data)
        if batch:
            return batch
    return decoder.end()


class _Relay:
    """The rest of an upstream stream, batch by batch, after the first was handed over."""

    def __init__(
        self,
        ctx: RequestContext,
        resp: UpstreamResponse,
        decoder: StreamDecoder,
        first: Batch,
        secrets: tuple[str, ...],
    ) -> None:
        self._ctx, self._resp, self._decoder, self._secrets = ctx, resp, decoder, secrets
        self._first: Batch | None = first
        self._ended = False
        self.finished = False
        self._closed = False
        self._wait = 0.0

    async def next(self) -> Batch | None:
        try:
            if self._first is not None:
                batch, self._first = self._first, None
                return self._check_end(batch)
            while not self._ended:
                started = time.perf_counter()
                try:
                    data = await self._resp.read_chunk()
                finally:
                    self._wait += time.perf_counter() - started
                if data:
                    batch = self._check_end(self._decoder.feed(data))
                else:
                    self._ended = True
                    batch = self._decoder.end()
                    self.finished = True
                if batch:
                    return batch
        except UpstreamError as exc:
            self._ctx.attempts[-1].error_class = exc.error_class
            exc.message = scrub(exc.message, self._secrets)
            raise
        return None

    def _check_end(self, batch: Batch) -> Batch:
        """If the upstream body is complete, finish now: the caller's last write can
        then carry the end of the response too (one packet less per stream)."""
        if not self._ended and self._resp.at_eof():
            self._ended = True
            tail = self._decoder.end()
            batch.parts += tail.parts
            self.finished = True
        return batch

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        ctx = self._ctx
        ctx.usage = self._decoder.state.usage
        ctx.upstream_s += self._wait
        ctx.attempts[-1].latency_s += self._wait
        self._resp.release()

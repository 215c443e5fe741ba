"""The chain's terminal: send the request to the route's targets.

The route's strategy orders the targets (``aigateway.routing``). Each target is
tried, and retried under the route's retry policy (tenacity: exponential backoff
with jitter, Retry-After honoured); a target that still fails before any byte
reached the caller hands over to the next one, when the failure is one another
target may not share (connect errors, timeouts, 429/5xx, or a provider refusing
our credentials). Retries and fallbacks together are bounded by a retry budget,
and targets that keep failing are skipped by their circuit breaker. Once the
first chunk of a stream is handed to the caller there is no retry: a later
failure ends the stream with an error event.
"""

from __future__ import annotations

import asyncio
import base64
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any

from tenacity import AsyncRetrying, RetryCallState

from aigateway import retries
from aigateway.config.model import RetryPolicy, Target, Timeouts
from aigateway.errors import (
    GatewayError,
    InvalidRequest,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from aigateway.estimate import estimate_prompt_tokens
from aigateway.pipeline import Attempt, JsonReply, Reply, RequestContext, StreamReply
from aigateway.providers.base import Batch, Parsed, ProviderAdapter, StreamDecoder
from aigateway.providers.native import NativeMessages
from aigateway.routing import RoutingState, TargetStats
from aigateway.scrub import scrub
from aigateway.tokens import Tokenizer
from aigateway.upstream import MAX_ERROR_BYTES, Transport, UpstreamResponse
from aigateway.usage import Usage

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


def _prompt_estimate(ctx: RequestContext, targets: Sequence[Target]) -> int:
    """Tokens the prompt needs, estimated only when some target declares a window."""
    if not ctx.is_chat or all(t.context_window is None for t in targets):
        return 0
    return estimate_prompt_tokens(ctx.body)


def _for_target(body: dict[str, Any], target: Target) -> dict[str, Any]:
    """The body for one target: its ``params`` set, its ``max_tokens`` cap applied."""
    out = {**body, **target.params}
    cap = target.max_tokens
    if cap is not None:
        asked = [k for k in ("max_tokens", "max_completion_tokens") if k in out]
        for key in asked:
            if isinstance(out[key], int) and out[key] > cap:
                out[key] = cap
        if not asked:
            out["max_tokens"] = cap
    return out


def _filtered(reply: Reply) -> bool:
    """A whole answer that the provider cut for content policy."""
    if not isinstance(reply, JsonReply):
        return False
    choices = reply.body.get("choices")
    return (
        isinstance(choices, list)
        and bool(choices)
        and isinstance(choices[0], dict)
        and choices[0].get("finish_reason") == "content_filter"
    )


def _counts_against_target(exc: GatewayError) -> bool:
    """Failures that say the target is unwell (not that the request was bad)."""
    return isinstance(exc, UpstreamError) and _may_fall_back(exc)


class Proxy:
    def __init__(
        self,
        providers: Mapping[str, ProviderHandle],
        routing: RoutingState,
        policies: Mapping[str, RetryPolicy],
        tokenizer: Tokenizer | None = None,
    ) -> None:
        self._providers = providers
        self._routing = routing
        self._policies = policies
        #: counts tokens when a provider sends no usage (None: a rough char count)
        self._tokenizer = tokenizer

    async def __call__(self, ctx: RequestContext) -> Reply:
        assert ctx.route is not None and ctx.route_name is not None
        route = ctx.route
        routing = self._routing
        routing.budget.on_request()
        policy = self._policies.get(route.retry) if route.retry is not None else None
        targets = routing.order(ctx.route_name, route)
        need = _prompt_estimate(ctx, targets)
        failure: GatewayError | None = None
        too_long_for = 0  # a context window the prompt did not fit, as a provider said
        try:
            for target in targets:
                window = target.context_window
                if window is not None and (need > window or window <= too_long_for):
                    continue  # it cannot fit: skipped before any call
                if ctx.attempts and not routing.budget.try_spend():
                    break  # the retry budget is spent: no more upstream traffic for this one
                stats = routing.stats(target, route.circuit_breaker)
                try:
                    reply = await self._with_retries(ctx, target, stats, policy)
                except GatewayError as exc:
                    failure = exc
                    if retries.is_context_length(exc):
                        too_long_for = max(too_long_for, window or 0)
                        continue  # a target with a larger window may fit it
                    if route.content_filter_fallback is not None and retries.is_content_filter(exc):
                        fallback = await self._content_fallback(ctx)
                        if fallback is not None:
                            return fallback
                        exc.headers["x-aigateway-attempts"] = str(len(ctx.attempts))
                        raise
                    if not _may_fall_back(exc):
                        break
                    continue
                if route.content_filter_fallback is not None and _filtered(reply):
                    fallback = await self._content_fallback(ctx)
                    return fallback if fallback is not None else reply
                return reply
            if failure is None:
                raise InvalidRequest(
                    f"The prompt (about {need} tokens) does not fit the context window of any "
                    f"target of '{ctx.route_name}'.",
                    code="context_length_exceeded",
                    param="messages",
                )
            failure.headers["x-aigateway-attempts"] = str(len(ctx.attempts))
            if len(ctx.attempts) > 1:
                failure.headers["x-should-retry"] = "false"  # the gateway already tried
            raise failure
        finally:
            # a failure's traceback holds this frame: kept as a local, it would make
            # a cycle of the request's objects (a fallback that succeeded keeps it)
            failure = None

    def _prompt_tokens(self, ctx: RequestContext, model: str) -> int:
        if ctx.prompt_tokens_est is None:
            tok = self._tokenizer
            ctx.prompt_tokens_est = (
                tok.chat_prompt(ctx.body, [model])
                if tok is not None and tok.has(model)
                else estimate_prompt_tokens(ctx.body)
            )
        return ctx.prompt_tokens_est

    def _estimate_usage(self, ctx: RequestContext, model: str, answer: dict[str, Any]) -> None:
        text = _answer_text(answer)
        tok = self._tokenizer
        output = (
            tok.count(text, model) if tok is not None and tok.has(model) else -(-len(text) // 4)
        )
        ctx.usage = Usage(self._prompt_tokens(ctx, model), output)
        ctx.usage_estimated = True

    async def _content_fallback(self, ctx: RequestContext) -> Reply | None:
        """A target refused on content policy: try the route's configured fallback
        once; None if that fails too (the caller then gets the original refusal,
        raised or returned where it is held: no frame here keeps it)."""
        route = ctx.route
        assert route is not None and route.content_filter_fallback is not None
        target = route.content_filter_fallback
        stats = self._routing.stats(target, route.circuit_breaker)
        try:
            return await self._attempt(ctx, target, stats)
        except GatewayError:
            return None

    async def _with_retries(
        self, ctx: RequestContext, target: Target, stats: TargetStats, policy: RetryPolicy | None
    ) -> Reply:
        if policy is None or policy.attempts == 1:
            return await self._attempt(ctx, target, stats)
        # (module functions, not closures: compiled, a closure holds this
        # coroutine's environment, which holds the retrying object holding it)
        retry = partial(_should_retry, policy, stats, self._routing)
        wait = partial(_backoff, policy, self._routing)
        async for attempt in AsyncRetrying(retry=retry, wait=wait, reraise=True):
            with attempt:
                return await self._attempt(ctx, target, stats)
        raise AssertionError("tenacity re-raises the last failure")  # pragma: no cover

    async def _attempt(self, ctx: RequestContext, target: Target, stats: TargetStats) -> Reply:
        handle = self._providers[target.provider]
        attempt = Attempt(target.provider, target.model)
        ctx.attempts.append(attempt)
        ctx.target = target
        breaker = stats.breaker
        clock = self._routing.clock
        breaker.on_attempt(clock())
        stats.in_flight += 1
        secrets = handle.secrets
        api_key = None
        if ctx.project is not None:
            override = ctx.project.provider_keys.get(target.provider)
            if override is not None:
                api_key = override.get_secret_value()
                secrets = (*secrets, api_key)
        adapter = handle.adapter
        model = target.model if target.model != "*" else (ctx.wildcard or "")
        attempt.model = model
        payload = ctx.body
        if target.max_tokens or target.params:
            payload = _for_target(payload, target)
        # an Anthropic caller and an Anthropic target: nothing to translate (the
        # protocol check is slow: only for Anthropic callers)
        native = (
            adapter
            if ctx.anthropic_body is not None and isinstance(adapter, NativeMessages)
            else None
        )
        if native is not None:
            assert ctx.anthropic_body is not None
            req = native.messages_request(
                ctx.anthropic_body,
                model,
                stream=ctx.stream,
                api_key=api_key,
                caller_headers=ctx.headers,
            )
        elif ctx.is_chat:
            req = adapter.chat_request(payload, model, stream=ctx.stream, api_key=api_key)
        else:
            req = adapter.embeddings_request(payload, model, api_key=api_key)
        started = time.perf_counter()
        handed_off = False
        resp: UpstreamResponse | None = None
        try:
            deadline = handle.timeouts.first_byte_s
            async with asyncio.timeout(deadline) if deadline else nullcontext():
                resp = await handle.transport.open(req, handle.timeouts)
                attempt.status = resp.status
                if not 200 <= resp.status < 300:
                    body = await resp.read(MAX_ERROR_BYTES)
                    raise adapter.error(resp.status, resp.headers, body)
                if req.stream:
                    decoder = (
                        native.messages_stream_decoder()
                        if native is not None
                        else adapter.stream_decoder(client_wants_usage=ctx.client_wants_usage)
                    )
                    tok = self._tokenizer
                    if tok is not None and tok.has(model):
                        decoder.state.counter = partial(tok.count, model=model)
                    first = await _first_batch(resp, decoder)
            stats.observe_ttfb(time.perf_counter() - started)
            breaker.on_success()
            if native is not None:
                ctx.reply_format = "anthropic"
            if req.stream:
                ctx.first_byte_s = time.perf_counter() - ctx.started
                _served(ctx, handle.name, decoder.state.served_model or target.model)
                handed_off = True
                prompt = partial(self._prompt_tokens, ctx, model)
                return StreamReply(_Relay(ctx, resp, decoder, first, secrets, stats, clock, prompt))
            body = await resp.read()
            if native is not None:
                parsed = native.parse_messages(body)
            elif ctx.is_chat:
                parsed = adapter.parse_chat(body)
            else:
                parsed = adapter.parse_embeddings(body)
                if ctx.body.get("encoding_format") == "base64":
                    _as_base64(parsed)
            ctx.usage = parsed.usage
            if parsed.usage is None and ctx.is_chat and native is None:
                self._estimate_usage(ctx, model, parsed.body)
            _served(ctx, handle.name, parsed.served_model or target.model)
            return JsonReply(200, parsed.body, parsed.raw)
        except TimeoutError:
            attempt.error_class = UpstreamTimeout.__name__
            breaker.on_failure(clock())
            raise UpstreamTimeout("The provider did not start answering in time.") from None
        except GatewayError as exc:
            attempt.error_class = exc.error_class
            exc.message = scrub(exc.message, secrets)
            if _counts_against_target(exc):
                breaker.on_failure(clock())
            raise
        finally:
            elapsed = time.perf_counter() - started
            attempt.latency_s = elapsed
            ctx.upstream_s += elapsed
            if not handed_off:
                stats.in_flight -= 1
                if resp is not None:
                    resp.release()


def _should_retry(
    policy: RetryPolicy, stats: TargetStats, routing: RoutingState, state: RetryCallState
) -> bool:
    exc = state.outcome.exception() if state.outcome is not None else None
    return (
        exc is not None
        and state.attempt_number < policy.attempts
        and retries.retryable(policy, exc)
        and stats.breaker.available(routing.clock())
        and routing.budget.try_spend()
    )


def _backoff(policy: RetryPolicy, routing: RoutingState, state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome is not None else None
    return retries.backoff_s(policy, state.attempt_number, exc, routing.rng)


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


def _as_base64(parsed: Parsed) -> None:
    """Vectors a provider sent as numbers, packed as the caller asked (little-endian
    float32, base64: what the OpenAI SDK requests by default)."""
    for item in parsed.body.get("data") or ():
        vector = item.get("embedding") if isinstance(item, dict) else None
        if isinstance(vector, list):
            try:
                packed = struct.pack(f"<{len(vector)}f", *vector)
            except (struct.error, OverflowError):  # text, null, nested lists, > float32
                raise UpstreamProtocolError(
                    "The provider's embedding is not a list of numbers."
                ) from None
            item["embedding"] = base64.b64encode(packed).decode()
            parsed.raw = None  # re-encoded: the body changed


def _answer_text(body: dict[str, Any]) -> str:
    """The text of a whole chat answer (content, tool arguments), for counting
    tokens when the provider sent no usage."""
    out: list[str] = []
    choices = body.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out += [
                p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
            ]
        for call in message.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                out.append(function["arguments"])
    return "".join(out)


class _Relay:
    """The rest of an upstream stream, batch by batch, after the first was handed over."""

    def __init__(
        self,
        ctx: RequestContext,
        resp: UpstreamResponse,
        decoder: StreamDecoder,
        first: Batch,
        secrets: tuple[str, ...],
        stats: TargetStats,
        clock: Callable[[], float],
        prompt_tokens: Callable[[], int],
    ) -> None:
        self._ctx, self._resp, self._decoder, self._secrets = ctx, resp, decoder, secrets
        self._stats, self._clock = stats, clock
        #: counts the prompt, for billing a stream that ends without usage
        self._prompt_tokens = prompt_tokens
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
                if batch or self.finished:  # the last batch, even empty: hooks see the end
                    return batch
        except UpstreamError as exc:
            self._ctx.attempts[-1].error_class = exc.error_class
            exc.message = scrub(exc.message, self._secrets)
            self._stats.breaker.on_failure(self._clock())
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
        state = self._decoder.state
        ctx.usage = state.usage
        if state.usage is None and ctx.is_chat:
            # cut short, the caller gone, or a server that sends no usage: count it
            ctx.usage = Usage(self._prompt_tokens(), state.output_tokens)
            ctx.usage_estimated = True
        ctx.upstream_s += self._wait
        ctx.attempts[-1].latency_s += self._wait
        self._stats.in_flight -= 1
        self._resp.release()

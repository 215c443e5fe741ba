"""An API request's way through the gateway: the pipeline, then its reply as HTTP.

``respond`` reads the current runtime snapshot once, runs the endpoint's
pipeline and writes what comes back: a JSON reply whole, a stream batch by batch
(hooks first, ``data: [DONE]`` or the Anthropic events at the end), any error in
the caller's error shape. Compiled (setup.py): it runs for every request.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from aigateway.errors import GatewayError, InvalidRequest, PayloadTooLarge
from aigateway.observability import REQUEST_ID, get_logger
from aigateway.pipeline import CLIENT_CLOSED, Endpoint, JsonReply, RequestContext, StreamReply
from aigateway.providers.anthropic_inbound import EventWriter, chat_to_message
from aigateway.providers.anthropic_inbound import error_body as anthropic_error_body
from aigateway.providers.anthropic_inbound import error_event as anthropic_error_event
from aigateway.providers.base import Batch
from aigateway.web_common import HOLDER, REQUEST_IDS, SSEResponse, dumps, error_response

_SSE_HEADERS = {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
}


class _Body:
    """Reads the request's body for the parse step, with the gateway's errors. (A
    class, not a closure: compiled, a closure holds its function's whole frame, the
    request's context among it, which holds the closure: a cycle per request.)"""

    def __init__(self, request: web.Request, max_bytes: int) -> None:
        self._request = request
        self._max_bytes = max_bytes

    async def __call__(self) -> bytes:
        try:
            return await self._request.read()
        except web.HTTPRequestEntityTooLarge:
            raise PayloadTooLarge(
                f"The request body is larger than the gateway's limit of {self._max_bytes} bytes."
            ) from None
        except (ConnectionError, HttpProcessingError, asyncio.IncompleteReadError) as exc:
            # a broken chunked encoding, a bad Content-Encoding, a caller gone mid-body
            raise InvalidRequest(
                f"The request body could not be read ({type(exc).__name__})."
            ) from None


async def respond(request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
    """Run ``endpoint``'s pipeline on the current runtime snapshot; the reply as
    HTTP (JSON whole, SSE batch by batch), any error in the caller's error shape."""
    runtime = request.app[HOLDER].current
    rid = request.app[REQUEST_IDS](request.headers)
    # every log line of this request carries its id (the handler runs in its own task)
    REQUEST_ID.set(rid)
    ctx = RequestContext(
        rid, endpoint, request.headers, _Body(request, runtime.config.server.max_body_bytes)
    )
    anthropic = endpoint == "messages"
    try:
        reply = await runtime.handler(ctx)
    except GatewayError as exc:
        response = error_response(exc, rid)
        if anthropic:  # the caller's API, the caller's error shape
            response.body = dumps(anthropic_error_body(exc))
        response.headers.update(ctx.response_headers)  # x-ratelimit-* on refusals too
        response.headers.update(exc.headers)
        return response
    except Exception:
        return internal_error(request, rid)
    headers = {**ctx.response_headers, "x-request-id": rid}
    if isinstance(reply, JsonReply):
        headers["x-aigateway-overhead-ms"] = f"{ctx.overhead_ms():.3f}"
        if anthropic and ctx.reply_format != "anthropic":
            body = dumps(chat_to_message(reply.body, str(ctx.body.get("model", ""))))
        else:
            body = reply.raw if reply.raw is not None else dumps(reply.body)
        return web.Response(
            status=reply.status, body=body, headers=headers, content_type="application/json"
        )
    frames: _Frames = _Frames()
    if anthropic:
        frames = (
            _RelayFrames()
            if ctx.reply_format == "anthropic"
            else _AnthropicFrames(str(ctx.body.get("model", "")))
        )
    return await _stream(
        request,
        reply,
        {**headers, **_SSE_HEADERS, "x-aigateway-overhead-ms": f"{ctx.overhead_ms():.3f}"},
        frames,
    )


_DONE = b"data: [DONE]\n\n"


class _Frames:
    """How a stream's batches reach the caller: OpenAI chunks, ``data: [DONE]``."""

    def batch(self, batch: Batch) -> bytes:
        return batch.encode()

    def done(self) -> bytes:
        return _DONE

    def failed(self, exc: GatewayError) -> bytes:
        # Bytes already reached the caller: no retry, no [DONE]; say what broke.
        return b"data: " + dumps(exc.openai_body()) + b"\n\n"


class _AnthropicFrames(_Frames):
    """OpenAI chunks translated to the Anthropic event stream."""

    def __init__(self, model: str) -> None:
        self._writer = EventWriter(model)

    def batch(self, batch: Batch) -> bytes:
        return self._writer.feed([chunk.data for chunk in batch.all_chunks()])

    def done(self) -> bytes:
        return self._writer.end()

    def failed(self, exc: GatewayError) -> bytes:
        return anthropic_error_event(exc)


class _RelayFrames(_Frames):
    """An Anthropic upstream's own events, relayed as they came."""

    def done(self) -> bytes:
        return b""

    def failed(self, exc: GatewayError) -> bytes:
        return anthropic_error_event(exc)


async def _stream(
    request: web.Request, reply: StreamReply, headers: dict[str, str], frames: _Frames
) -> web.StreamResponse:
    resp = SSEResponse(status=200, headers=headers)
    stream = reply.stream
    on_batch = reply.on_batch
    ended = False
    try:
        await resp.prepare(request)
        tail = b""
        status: int = 200
        error: str | None = None
        try:
            while (batch := await stream.next()) is not None:
                for hook in on_batch:
                    hook(batch)
                if stream.finished:
                    tail = frames.batch(batch)
                    break
                data = frames.batch(batch)
                if data:
                    await resp.write(data)
            tail += frames.done()  # after the last batch: it may carry the usage
        except GatewayError as exc:
            tail = frames.failed(exc)
            status, error = exc.status, exc.error_class
        # The exchange is over: account for it (and commit its log row) before the
        # caller gets the last bytes.
        await stream.aclose()
        ended = True
        for end in reply.on_end:
            end(status, error)
        for wait in reply.before_tail:
            await wait()
        await resp.write_eof(tail)
    except ConnectionError:
        pass  # the caller went away: billed and logged as such below
    finally:
        if not ended:
            await stream.aclose()
            for end in reply.on_end:
                end(CLIENT_CLOSED, "ClientClosed")
    return resp


def internal_error(request: web.Request, rid: str) -> web.Response:
    get_logger("aigateway.app").exception(
        "unhandled error", path=request.path[:200], request_id=rid
    )
    failure = GatewayError("The gateway failed to handle this request.", code="internal_error")
    return error_response(failure, rid)

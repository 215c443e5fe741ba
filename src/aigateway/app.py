"""The aiohttp application: routes, the edge (errors, request ids) and lifecycle.

Each API handler reads the current runtime snapshot once and runs its pipeline;
this module only turns replies into HTTP (JSON or SSE) and errors into the OpenAI
error shape. Nothing a caller sends can produce an HTML page or a bare 500.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import secrets
import sys
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from aigateway.config.load import LoadedConfig
from aigateway.errors import (
    AuthenticationFailed,
    GatewayError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
)
from aigateway.keys import key_from_headers
from aigateway.metrics import Metrics
from aigateway.observability import AccessLog, LineSink, get_logger
from aigateway.pipeline import Endpoint, JsonReply, RequestContext, StreamReply
from aigateway.runtime import Runtime, RuntimeHolder, build_runtime
from aigateway.upstream import HttpTransport, new_session

HOLDER = web.AppKey("holder", RuntimeHolder)
METRICS = web.AppKey("metrics", Metrics)
READY = web.AppKey("ready", dict[str, bool])
LOADED = web.AppKey("loaded", LoadedConfig)
ACCESS_LOG = web.AppKey("access_log", AccessLog)

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_SSE_HEADERS = {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
}


class RequestIds:
    """Request ids: a random per-process prefix and a counter (unique across replicas,
    32 hex characters like a UUID, and far cheaper to make)."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count(1)

    def __call__(self, headers: Mapping[str, str]) -> str:
        """The caller's ``x-request-id`` when it is well-formed, else a new one."""
        given = headers.get("x-request-id")
        if given is not None and _REQUEST_ID_RE.match(given):
            return given
        return f"{self._prefix}{next(self._counter):016x}"


REQUEST_IDS = web.AppKey("request_ids", RequestIds)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def error_response(exc: GatewayError, rid: str) -> web.Response:
    headers = {**exc.headers, "x-request-id": rid}
    return web.Response(
        status=exc.status,
        body=_dumps(exc.openai_body()),
        headers=headers,
        content_type="application/json",
    )


# --- the API ---------------------------------------------------------------------------


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _run(request, "chat")


async def embeddings(request: web.Request) -> web.StreamResponse:
    return await _run(request, "embeddings")


async def _run(request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
    runtime = request.app[HOLDER].current
    rid = request.app[REQUEST_IDS](request.headers)
    max_bytes = runtime.config.server.max_body_bytes

    async def read_body() -> bytes:
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise PayloadTooLarge(
                f"The request body is larger than the gateway's limit of {max_bytes} bytes."
            ) from None
        except (ConnectionError, HttpProcessingError, asyncio.IncompleteReadError) as exc:
            # a broken chunked encoding, a bad Content-Encoding, a caller gone mid-body
            raise InvalidRequest(
                f"The request body could not be read ({type(exc).__name__})."
            ) from None

    ctx = RequestContext(rid, endpoint, request.headers, read_body)
    try:
        reply = await runtime.handler(ctx)
    except GatewayError as exc:
        return error_response(exc, rid)
    except Exception:
        return _internal_error(request, rid)
    headers = {**ctx.response_headers, "x-request-id": rid}
    if isinstance(reply, JsonReply):
        headers["x-aigateway-overhead-ms"] = f"{ctx.overhead_ms():.3f}"
        body = reply.raw if reply.raw is not None else _dumps(reply.body)
        return web.Response(
            status=reply.status, body=body, headers=headers, content_type="application/json"
        )
    return await _stream(
        request,
        reply,
        {**headers, **_SSE_HEADERS, "x-aigateway-overhead-ms": f"{ctx.overhead_ms():.3f}"},
    )


_DONE = b"data: [DONE]\n\n"


class _SSEResponse(web.StreamResponse):
    """Sends its headers together with the first batch: one packet, not two (the
    first batch is already in hand when the response starts)."""

    _send_headers_immediately = False


async def _stream(
    request: web.Request, reply: StreamReply, headers: dict[str, str]
) -> web.StreamResponse:
    resp = _SSEResponse(status=200, headers=headers)
    stream = reply.stream
    try:
        await resp.prepare(request)
        tail = _DONE
        try:
            while (batch := await stream.next()) is not None:
                if stream.finished:
                    tail = batch.encode() + _DONE
                    break
                await resp.write(batch.encode())
        except GatewayError as exc:
            # Bytes already reached the caller: no retry, no [DONE]; say what broke.
            tail = b"data: " + _dumps(exc.openai_body()) + b"\n\n"
        await resp.write_eof(tail)
    except ConnectionError:
        pass  # the caller went away; the pipeline bills and logs it in its finally
    finally:
        await stream.aclose()
    return resp


async def list_models(request: web.Request) -> web.Response:
    runtime, rid = request.app[HOLDER].current, request.app[REQUEST_IDS](request.headers)
    try:
        names = _visible_models(runtime, request)
    except GatewayError as exc:
        return error_response(exc, rid)
    data = [_model_entry(runtime, name) for name in names]
    return web.json_response(
        {"object": "list", "data": data}, headers={"x-request-id": rid}, dumps=_json_str
    )


async def get_model(request: web.Request) -> web.Response:
    runtime, rid = request.app[HOLDER].current, request.app[REQUEST_IDS](request.headers)
    name = request.match_info["model"]
    try:
        names = _visible_models(runtime, request)
        if name not in names:
            raise NotFound(f"The model '{name[:100]}' does not exist.", param="model")
    except GatewayError as exc:
        return error_response(exc, rid)
    return web.json_response(
        _model_entry(runtime, name),
        headers={"x-request-id": rid},
        dumps=_json_str,
    )


def _visible_models(runtime: Runtime, request: web.Request) -> list[str]:
    principal = runtime.keys.authenticate(key_from_headers(request.headers), datetime.now(UTC))
    if principal is None:
        raise AuthenticationFailed()
    return [name for name in runtime.config.models if principal.may_use(name)]


def _model_entry(runtime: Runtime, name: str) -> dict[str, Any]:
    route = runtime.config.models[name]
    return {"id": name, "object": "model", "created": runtime.created, "owned_by": route.owned_by}


def _json_str(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


# --- operations ------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    rid = request.app[REQUEST_IDS](request.headers)
    return web.json_response({"status": "ok"}, headers={"x-request-id": rid})


async def readyz(request: web.Request) -> web.Response:
    rid = request.app[REQUEST_IDS](request.headers)
    if not request.app[READY]["ready"]:
        return web.json_response(
            {"status": "shutting down"}, status=503, headers={"x-request-id": rid}
        )
    runtime = request.app[HOLDER].current
    return web.json_response(
        {"status": "ready", "config_sha256": runtime.loaded.sha256},
        headers={"x-request-id": rid},
    )


async def metrics_endpoint(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    resp = web.Response(
        body=body, headers={"x-request-id": request.app[REQUEST_IDS](request.headers)}
    )
    resp.headers["content-type"] = CONTENT_TYPE_LATEST
    return resp


# --- the edge --------------------------------------------------------------------------

# --- the edge: what no route handles ----------------------------------------------------
# Plain routes rather than an aiohttp middleware, which would wrap every request.


async def not_found(request: web.Request) -> web.Response:
    err = NotFound(f"Unknown path: {request.method} {request.path[:200]}", code="not_found")
    return error_response(err, request.app[REQUEST_IDS](request.headers))


def _method_not_allowed(allowed: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        err = InvalidRequest(
            f"{request.method} is not allowed here; use {allowed}.", code="method_not_allowed"
        )
        err.status = 405
        resp = error_response(err, request.app[REQUEST_IDS](request.headers))
        resp.headers["Allow"] = allowed
        return resp

    return handler


def _internal_error(request: web.Request, rid: str) -> web.Response:
    get_logger("aigateway.app").exception(
        "unhandled error", path=request.path[:200], request_id=rid
    )
    failure = GatewayError("The gateway failed to handle this request.", code="internal_error")
    return error_response(failure, rid)


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    loaded = app[LOADED]
    session = new_session(loaded.config.server.upstream_max_connections)
    try:
        runtime = build_runtime(
            loaded,
            http=HttpTransport(session),
            metrics=app[METRICS],
            access_log=app[ACCESS_LOG],
        )
        app[METRICS].config_info.labels(loaded.sha256).set(1)
        app[HOLDER] = RuntimeHolder(runtime)
        app[READY]["ready"] = True
        yield
    finally:
        app[READY]["ready"] = False
        await session.close()


async def _not_ready(app: web.Application) -> None:
    app[READY]["ready"] = False


def create_app(
    loaded: LoadedConfig, *, metrics: Metrics | None = None, access_log: AccessLog | None = None
) -> web.Application:
    app = web.Application(client_max_size=loaded.config.server.max_body_bytes)
    app[LOADED] = loaded
    app[METRICS] = metrics or Metrics()
    app[ACCESS_LOG] = access_log or AccessLog(LineSink(sys.stdout))
    app[READY] = {"ready": False}
    app[REQUEST_IDS] = RequestIds()
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_not_ready)
    routes: list[tuple[str, str, Any]] = []
    for prefix in ("/v1", ""):
        routes += [
            ("POST", f"{prefix}/chat/completions", chat_completions),
            ("POST", f"{prefix}/embeddings", embeddings),
            ("GET", f"{prefix}/models", list_models),
            ("GET", prefix + "/models/{model:.+}", get_model),
        ]
    routes += [
        ("GET", "/healthz", healthz),
        ("GET", "/readyz", readyz),
        ("GET", "/metrics", metrics_endpoint),
    ]
    for method, path, handler in routes:
        resource = app.router.add_resource(path)
        resource.add_route(method, handler)
        if method == "GET":
            resource.add_route("HEAD", handler)
        resource.add_route("*", _method_not_allowed(method))
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app

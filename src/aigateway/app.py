"""The aiohttp application: routes, the edge (errors, request ids) and lifecycle.

Each API handler reads the current runtime snapshot once and runs its pipeline;
this module only turns replies into HTTP (JSON or SSE) and errors into the OpenAI
error shape. Nothing a caller sends can produce an HTML page or a bare 500.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
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
from aigateway.observability import Metrics, get_logger
from aigateway.pipeline import Endpoint, JsonReply, RequestContext, StreamReply
from aigateway.runtime import Runtime, RuntimeHolder, build_runtime
from aigateway.upstream import HttpTransport, new_session

HOLDER = web.AppKey("holder", RuntimeHolder)
METRICS = web.AppKey("metrics", Metrics)
READY = web.AppKey("ready", dict[str, bool])
LOADED = web.AppKey("loaded", LoadedConfig)

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_SSE_HEADERS = {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
}


def request_id(headers: Mapping[str, str]) -> str:
    """The caller's ``x-request-id`` when it is well-formed, else a new one."""
    given = headers.get("x-request-id")
    if given is not None and _REQUEST_ID_RE.match(given):
        return given
    return uuid.uuid4().hex


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
    rid = request_id(request.headers)
    max_bytes = runtime.config.server.max_body_bytes

    async def read_body() -> bytes:
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise PayloadTooLarge(
                f"The request body is larger than the gateway's limit of {max_bytes} bytes."
            ) from None

    ctx = RequestContext(rid, endpoint, request.headers, read_body)
    try:
        reply = await runtime.handler(ctx)
    except GatewayError as exc:
        return error_response(exc, rid)
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


async def _stream(
    request: web.Request, reply: StreamReply, headers: dict[str, str]
) -> web.StreamResponse:
    resp = web.StreamResponse(status=200, headers=headers)
    chunks = reply.chunks
    try:
        await resp.prepare(request)
        try:
            async for chunk in chunks:
                raw = chunk.raw if chunk.raw is not None else _dumps(chunk.data)
                await resp.write(b"data: " + raw + b"\n\n")
        except GatewayError as exc:
            # Bytes already reached the caller: no retry, no [DONE]; say what broke.
            await resp.write(b"data: " + _dumps(exc.openai_body()) + b"\n\n")
        else:
            await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
    except ConnectionError:
        pass  # the caller went away; the pipeline bills and logs it in its finally
    finally:
        await chunks.aclose()
    return resp


async def list_models(request: web.Request) -> web.Response:
    runtime, rid = request.app[HOLDER].current, request_id(request.headers)
    try:
        names = _visible_models(runtime, request)
    except GatewayError as exc:
        return error_response(exc, rid)
    data = [_model_entry(runtime, name) for name in names]
    return web.json_response(
        {"object": "list", "data": data}, headers={"x-request-id": rid}, dumps=_json_str
    )


async def get_model(request: web.Request) -> web.Response:
    runtime, rid = request.app[HOLDER].current, request_id(request.headers)
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
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    if not request.app[READY]["ready"]:
        return web.json_response({"status": "shutting down"}, status=503)
    runtime = request.app[HOLDER].current
    return web.json_response({"status": "ready", "config_sha256": runtime.loaded.sha256})


async def metrics_endpoint(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    resp = web.Response(body=body)
    resp.headers["content-type"] = CONTENT_TYPE_LATEST
    return resp


# --- the edge --------------------------------------------------------------------------

_HTTP_ERRORS: dict[int, tuple[str, str]] = {
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
}


@web.middleware
async def edge(request: web.Request, handler: Any) -> web.StreamResponse:
    """Turns aiohttp's own errors into OpenAI JSON and stamps ``x-request-id``."""
    try:
        resp: web.StreamResponse = await handler(request)
    except web.HTTPException as exc:
        err_type, code = _HTTP_ERRORS.get(exc.status, ("invalid_request_error", "http_error"))
        message = (
            f"Unknown path: {request.method} {request.path[:200]}"
            if exc.status == 404
            else exc.reason
        )
        err = InvalidRequest(message, code=code)
        err.status, err.type = exc.status, err_type
        resp = error_response(err, request_id(request.headers))
        if exc.status == 405:
            allow = exc.headers.get("Allow")
            if allow:
                resp.headers["Allow"] = allow
        return resp
    except Exception:
        get_logger("aigateway.app").exception("unhandled error", path=request.path[:200])
        failure = GatewayError("The gateway failed to handle this request.", code="internal_error")
        return error_response(failure, request_id(request.headers))
    if not resp.prepared and "x-request-id" not in resp.headers:
        resp.headers["x-request-id"] = request_id(request.headers)
    return resp


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    loaded = app[LOADED]
    session = new_session(loaded.config.server.upstream_max_connections)
    try:
        runtime = build_runtime(
            loaded,
            http=HttpTransport(session),
            metrics=app[METRICS],
            logger=get_logger("aigateway.access"),
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


def create_app(loaded: LoadedConfig, *, metrics: Metrics | None = None) -> web.Application:
    app = web.Application(client_max_size=loaded.config.server.max_body_bytes, middlewares=[edge])
    app[LOADED] = loaded
    app[METRICS] = metrics or Metrics()
    app[READY] = {"ready": False}
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_not_ready)
    for prefix in ("/v1", ""):
        app.router.add_post(f"{prefix}/chat/completions", chat_completions)
        app.router.add_post(f"{prefix}/embeddings", embeddings)
        app.router.add_get(f"{prefix}/models", list_models)
        app.router.add_get(prefix + "/models/{model:.+}", get_model)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    return app

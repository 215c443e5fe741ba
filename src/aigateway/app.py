"""The aiohttp application: routes, the edge (errors, request ids) and lifecycle.

Each API handler hands its request to ``respond`` (the pipeline on the current
runtime snapshot, its reply as JSON or SSE, errors in the caller's error shape);
this module holds the routes, the side endpoints and the lifecycle. Nothing a
caller sends can produce an HTML page or a bare 500.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from aigateway import admin, jsonc
from aigateway.accesslog import AccessLog, LineSink
from aigateway.cache_store import open_cache
from aigateway.config.load import LoadedConfig
from aigateway.config.watch import watch_config
from aigateway.errors import (
    AuthenticationFailed,
    GatewayError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
)
from aigateway.keys import digest, key_from_headers
from aigateway.memory import release_free_memory
from aigateway.metrics import Metrics
from aigateway.middleware.parse import parse_json
from aigateway.middleware.route import ResolveRoute
from aigateway.observability import get_logger
from aigateway.pipeline import JsonReply, RequestContext
from aigateway.policy import token_needs
from aigateway.pricing import PriceTables, price_problems, price_sources
from aigateway.promptlog import PromptLog, log_files
from aigateway.providers.anthropic_inbound import error_body as anthropic_error_body
from aigateway.providers.anthropic_inbound import (
    messages_to_chat,
    validate_messages,
)
from aigateway.rebuild import spend_to_restore
from aigateway.reload import Reloader
from aigateway.respond import respond
from aigateway.routing import RoutingState
from aigateway.runtime import Runtime, RuntimeHolder, build_runtime
from aigateway.state_fallback import open_store
from aigateway.state_memory import MemoryStore
from aigateway.tasks import Tasks
from aigateway.tokens import Tokenizer
from aigateway.upstream import HttpTransport, new_client
from aigateway.web_common import (
    ACCESS_LOG,
    CACHE,
    CONFIG_PATH,
    HOLDER,
    LOADED,
    METRICS,
    PROMPT_LOG,
    READY,
    RELOADER,
    REQUEST_IDS,
    SEMANTIC,
    STARTED,
    STORE,
    TASKS,
    TOKENIZER,
    WATCH,
    RequestIds,
    dumps,
    error_response,
)

# --- the API ---------------------------------------------------------------------------


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await respond(request, "chat")


async def embeddings(request: web.Request) -> web.StreamResponse:
    return await respond(request, "embeddings")


async def messages(request: web.Request) -> web.StreamResponse:
    """The Anthropic Messages API (``?beta=true`` and other query strings ignored)."""
    return await respond(request, "messages")


async def count_tokens(request: web.Request) -> web.StreamResponse:
    """``POST /v1/messages/count_tokens``: the prompt counted offline, as the gateway
    counts it for limits and budgets (OpenAI's tokenizer; x1.25 for models that are
    not OpenAI's, so the figure errs high). Not a model call: no limits apply."""
    runtime, rid = request.app[HOLDER].current, request.app[REQUEST_IDS](request.headers)
    try:
        principal = runtime.keys.authenticate(key_from_headers(request.headers), datetime.now(UTC))
        if principal is None:
            raise AuthenticationFailed()
        if request.content_length and request.content_length > runtime.config.server.max_body_bytes:
            raise PayloadTooLarge("The request body is larger than the gateway's limit.")
        body = parse_json(await request.read())
        validate_messages({"max_tokens": 1, **body})
        chat = messages_to_chat({"max_tokens": 1, **body})
        probe = RequestContext(rid, "messages", request.headers, request.read, body=chat)
        await ResolveRoute(runtime.config.models)(probe, _resolved)
        if probe.route_name is None or not principal.may_use(probe.route_name):
            raise PermissionDenied(f"This key may not use the model '{body['model'][:100]}'.")
        assert probe.route is not None
        models = [
            t.model if t.model != "*" else (probe.wildcard or "") for t in probe.route.targets
        ]
        tokens = await asyncio.to_thread(request.app[TOKENIZER].chat_prompt, chat, models)
    except GatewayError as exc:
        response = error_response(exc, rid)
        response.body = dumps(anthropic_error_body(exc))
        return response
    return web.json_response({"input_tokens": tokens}, headers={"x-request-id": rid})


async def _resolved(ctx: RequestContext) -> JsonReply:
    return JsonReply(200, {})


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
    return jsonc.dumps(obj)


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
    rid = request.app[REQUEST_IDS](request.headers)
    required = request.app[HOLDER].current.config.server.metrics_token_sha256
    if required is not None:
        given = key_from_headers(request.headers)
        if given is None or not hmac.compare_digest(digest(given), required):
            return error_response(AuthenticationFailed(), rid)
    body = generate_latest(request.app[METRICS].registry)
    resp = web.Response(body=body, headers={"x-request-id": rid})
    resp.headers["content-type"] = CONTENT_TYPE_LATEST
    return resp


def metrics_app(app: web.Application) -> web.Application:
    """``/metrics`` and ``/healthz`` alone, for ``server.metrics_port``."""
    side = web.Application()
    side[METRICS], side[HOLDER], side[REQUEST_IDS] = app[METRICS], app[HOLDER], app[REQUEST_IDS]
    side.router.add_get("/metrics", metrics_endpoint)
    side.router.add_get("/healthz", healthz)
    return side


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


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    loaded = app[LOADED]
    metrics = app[METRICS]
    log = get_logger("aigateway")
    client = new_client(loaded.config.server.upstream_max_connections)
    tasks = app[TASKS] = Tasks(log)
    stop_watching = asyncio.Event()
    try:
        http = HttpTransport(client)
        # Outlives reloads: unchanged targets keep their statistics and breakers.
        routing = RoutingState(clock=time.monotonic)
        metrics.routing = routing
        # Outlive reloads too: counters of unchanged keys, projects and windows go on.
        store = app[STORE] = open_store(loaded.config.state, metrics)
        tokenizer = app[TOKENIZER]

        price_tables = PriceTables()

        def prepare(loaded: LoadedConfig) -> None:
            # token limits and budgets count prompts: load those vocabularies
            # (0.2-0.4 s and 4-7 MiB each) before the config serves, not on a request
            needs = token_needs(loaded.config)
            if not all(tokenizer.has_encoding(name) for name in needs):
                tokenizer.load(needs)
                release_free_memory()  # the build's temporaries, freed mid-heap
            # the price tables of its providers too (a child process, ~0.6 s)
            problem = price_tables.ensure(price_sources(loaded.config))
            if problem is not None:
                log.warning(
                    "price tables could not be drawn in a child process: genai-prices "
                    "was loaded into the gateway instead (~5 MiB more memory)",
                    reason=problem,
                )
            for config_error in price_problems(loaded.config, price_tables):
                log.error("models of this provider are unpriced", problem=config_error)

        await asyncio.to_thread(prepare, loaded)
        cache, semantic = open_cache(loaded.config.cache, loaded.config.state, metrics)
        app[CACHE], app[SEMANTIC] = cache, semantic
        prompt_log = None
        if loaded.config.prompt_log is not None:
            prompt_log = app[PROMPT_LOG] = PromptLog(loaded.config.prompt_log, metrics)
            await prompt_log.open(tasks.spawn)
            if isinstance(store, MemoryStore):
                # spend in memory died with the last process; the log did not
                files = log_files(prompt_log.path)
                now = time.time()
                for counter, amount, ends in await asyncio.to_thread(
                    spend_to_restore, loaded.config, files, now
                ):
                    store.add_spent(counter, amount, ends, now)

        def unpriced(provider: str, model: str) -> None:
            log.warning(
                "model has no price: its cost is reported as null; add it under pricing: "
                "in gateway.yaml",
                provider=provider,
                model=model[:200],
            )

        def build(loaded: LoadedConfig) -> Runtime:
            return build_runtime(
                loaded,
                http=http,
                metrics=metrics,
                access_log=app[ACCESS_LOG],
                routing=routing,
                store=store,
                tokenizer=tokenizer,
                spawn=tasks.finish,
                prompt_log=prompt_log,
                cache=cache,
                semantic=semantic,
                on_unpriced=unpriced,
                price_tables=price_tables,
            )

        holder = app[HOLDER] = RuntimeHolder(build(loaded))
        metrics.config_info.labels(loaded.sha256).set(1)
        metrics.config_last_reload_success.set(time.time())
        path = app.get(CONFIG_PATH)
        if path is not None:
            reloader = app[RELOADER] = Reloader(
                Path(path),
                holder,
                build,
                metrics=metrics,
                logger=log,
                env=os.environ,
                prepare=prepare,
            )
            if app[WATCH]:
                tasks.supervise(
                    "config-watch",
                    lambda: watch_config(
                        Path(path),
                        reloader.current_digest,
                        lambda: reloader.reload("watch"),
                        stop=stop_watching,
                    ),
                )
        app[READY]["ready"] = True
        yield
    finally:
        app[READY]["ready"] = False
        stop_watching.set()
        if PROMPT_LOG in app:
            await app[PROMPT_LOG].close()  # every row queued is written first
        await tasks.close()
        if STORE in app:
            await app[STORE].close()
        if CACHE in app:
            await app[CACHE].close()
        if SEMANTIC in app:
            await app[SEMANTIC].close()
        client.close()


async def _not_ready(app: web.Application) -> None:
    app[READY]["ready"] = False


def create_app(
    loaded: LoadedConfig,
    *,
    metrics: Metrics | None = None,
    access_log: AccessLog | None = None,
    config_path: str | None = None,
    watch: bool = True,
    tokenizer: Tokenizer | None = None,
) -> web.Application:
    """The gateway as an aiohttp application.

    With ``config_path`` the config can be reloaded (``POST /admin/reload``,
    SIGHUP under ``aigateway serve``) and, with ``watch``, is reloaded when the
    file changes.
    """
    app = web.Application(client_max_size=loaded.config.server.max_body_bytes)
    app[LOADED] = loaded
    app[METRICS] = metrics or Metrics()
    app[ACCESS_LOG] = access_log or AccessLog(LineSink(sys.stdout))
    app[READY] = {"ready": False}
    app[REQUEST_IDS] = RequestIds()
    app[STARTED] = time.monotonic()
    app[WATCH] = watch
    app[TOKENIZER] = tokenizer or Tokenizer()
    if config_path is not None:
        app[CONFIG_PATH] = config_path
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_not_ready)
    routes: list[tuple[str, str, Any]] = []
    for prefix in ("/v1", ""):
        routes += [
            ("POST", f"{prefix}/chat/completions", chat_completions),
            ("POST", f"{prefix}/embeddings", embeddings),
            ("POST", f"{prefix}/messages", messages),
            ("POST", f"{prefix}/messages/count_tokens", count_tokens),
            ("GET", f"{prefix}/models", list_models),
            ("GET", prefix + "/models/{model:.+}", get_model),
        ]
    routes += [
        ("POST", "/admin/reload", admin.reload),
        ("GET", "/admin/config", admin.effective_config),
        ("GET", "/admin/health", admin.health),
        ("GET", "/admin/usage", admin.usage),
        ("POST", "/admin/guardrails/test", admin.guardrails_test),
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

"""The admin API: reload, the effective config (secrets redacted), health details,
usage summaries from the prompt log.

Off unless ``admin.key_sha256`` is set (then ``/admin/*`` answers 404 like any
unknown path). The admin key is compared by digest, in constant time.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Any

from aiohttp import web

from aigateway import __version__, guard
from aigateway.errors import AuthenticationFailed, GatewayError, InvalidRequest, NotFound
from aigateway.keys import digest, key_from_headers
from aigateway.ledger import DIMENSIONS
from aigateway.middleware.parse import parse_json
from aigateway.promptlog import log_files
from aigateway.web_common import (
    HOLDER,
    METRICS,
    PROMPT_LOG,
    READY,
    RELOADER,
    REQUEST_IDS,
    STARTED,
    error_response,
)


def _check(request: web.Request) -> None:
    admin = request.app[HOLDER].current.config.admin
    if admin is None:
        raise NotFound(f"Unknown path: {request.method} {request.path[:200]}", code="not_found")
    key = key_from_headers(request.headers)
    if key is None or not hmac.compare_digest(digest(key), admin.key_sha256):
        raise AuthenticationFailed()


async def _guarded(request: web.Request, handler: Any) -> web.StreamResponse:
    rid = request.app[REQUEST_IDS](request.headers)
    try:
        _check(request)
        body = await handler(request)
    except GatewayError as exc:
        return error_response(exc, rid)
    return web.json_response(body, headers={"x-request-id": rid})


async def reload(request: web.Request) -> web.StreamResponse:
    async def run(request: web.Request) -> dict[str, Any]:
        reloader = request.app.get(RELOADER)
        if reloader is None:
            raise NotFound("This gateway was not started from a config file.", code="not_found")
        result = await reloader.reload("admin")
        return result.as_dict()

    return await _guarded(request, run)


async def effective_config(request: web.Request) -> web.StreamResponse:
    async def run(request: web.Request) -> dict[str, Any]:
        runtime = request.app[HOLDER].current
        return {
            "config_sha256": runtime.loaded.sha256,
            "source": runtime.loaded.source,
            # SecretStr fields dump as "**********": provider keys never leave
            "config": runtime.config.model_dump(mode="json"),
        }

    return await _guarded(request, run)


async def health(request: web.Request) -> web.StreamResponse:
    async def run(request: web.Request) -> dict[str, Any]:
        runtime = request.app[HOLDER].current
        reloader = request.app.get(RELOADER)
        last = reloader.last if reloader is not None else None
        return {
            "version": __version__,
            "ready": request.app[READY]["ready"],
            "uptime_s": round(time.monotonic() - request.app[STARTED], 3),
            "config_sha256": runtime.loaded.sha256,
            "config_loaded_at": runtime.created,
            "in_flight_requests": request.app[METRICS].in_flight.value,
            "last_reload": last.as_dict() if last is not None else None,
        }

    return await _guarded(request, run)


async def usage(request: web.Request) -> web.StreamResponse:
    """``aigateway log stats`` as JSON: ``?since=24h&until=...&by=project&series=day``."""

    async def run(request: web.Request) -> dict[str, Any]:
        log = request.app.get(PROMPT_LOG)
        if log is None:
            raise NotFound("No prompt_log is configured: there is no usage to summarise.")
        from aigateway import logread  # sqlite3: loaded only by gateways that have a log

        q = request.query
        by = q.getall("by", []) or list(DIMENSIONS)
        series = q.get("series")
        if series not in (None, "day", "hour"):
            raise InvalidRequest("series must be 'day' or 'hour'", param="series")
        for dim in by:
            if dim not in DIMENSIONS and not dim.startswith("label:"):
                raise InvalidRequest(f"unknown breakdown {dim[:100]!r}", param="by")
        try:
            now = time.time()
            since = logread.parse_when(q.get("since"), now)
            until = logread.parse_when(q.get("until"), now)
        except ValueError:
            raise InvalidRequest(
                "since/until: an ISO time or a duration such as 24h", param="since"
            ) from None
        files = log_files(log.path)

        def summarise() -> dict[str, Any]:
            rows = logread.rows(files, since=since, until=until)
            return logread.stats(rows, by=by, series=series)

        return await asyncio.to_thread(summarise)  # reading a big log is not for the loop

    return await _guarded(request, run)


async def guardrails_test(request: web.Request) -> web.StreamResponse:
    """``{"text", "project"?, "key"?, "route"?}`` → the hits and the text as sent on."""

    async def run(request: web.Request) -> dict[str, Any]:
        body = parse_json(await request.read())
        text = body.get("text")
        if not isinstance(text, str):
            raise InvalidRequest("text: a string is required", param="text")
        scope = {name: body.get(name) for name in ("project", "key", "route")}
        for name, value in scope.items():
            if value is not None and not isinstance(value, str):
                raise InvalidRequest(f"{name}: a string is required", param=name)
        try:
            return guard.try_text(request.app[HOLDER].current.config, text, **scope)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None

    return await _guarded(request, run)

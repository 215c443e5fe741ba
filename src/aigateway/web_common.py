"""What the aiohttp modules share: typed app state, request ids, error responses."""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from aigateway.accesslog import AccessLog
from aigateway.cache_store import CacheStore
from aigateway.config.load import LoadedConfig
from aigateway.errors import GatewayError
from aigateway.jsonc import dumpb
from aigateway.metrics import Metrics
from aigateway.promptlog import PromptLog
from aigateway.quota import LimitStore
from aigateway.reload import Reloader
from aigateway.runtime import RuntimeHolder
from aigateway.semantic_store import SemanticStore
from aigateway.tasks import Tasks
from aigateway.tokens import Tokenizer

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


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


HOLDER = web.AppKey("holder", RuntimeHolder)
METRICS = web.AppKey("metrics", Metrics)
READY = web.AppKey("ready", dict[str, bool])
LOADED = web.AppKey("loaded", LoadedConfig)
ACCESS_LOG = web.AppKey("access_log", AccessLog)
REQUEST_IDS = web.AppKey("request_ids", RequestIds)
#: set when the gateway serves a config file (reload needs a file to re-read)
CONFIG_PATH = web.AppKey("config_path", str)
RELOADER = web.AppKey("reloader", Reloader)
TASKS = web.AppKey("tasks", Tasks)
WATCH = web.AppKey("watch", bool)
#: rate-limit and budget counters (memory or Redis); outlives reloads
STORE = web.AppKey("store", LimitStore)
TOKENIZER = web.AppKey("tokenizer", Tokenizer)
PROMPT_LOG = web.AppKey("prompt_log", PromptLog)
CACHE = web.AppKey("cache", CacheStore)
SEMANTIC = web.AppKey("semantic", SemanticStore)
#: time.monotonic() at start-up
STARTED = web.AppKey("started", float)


def dumps(obj: Any) -> bytes:
    return dumpb(obj)


def error_response(exc: GatewayError, rid: str) -> web.Response:
    headers = {**exc.headers, "x-request-id": rid}
    return web.Response(
        status=exc.status,
        body=dumps(exc.openai_body()),
        headers=headers,
        content_type="application/json",
    )


class SSEResponse(web.StreamResponse):
    """Sends its headers together with the first batch: one packet, not two (the
    first batch is already in hand when the response starts)."""

    _send_headers_immediately = False

"""Who is calling: a gateway key → its key entry, project and allowed routes."""

from __future__ import annotations

from datetime import UTC, datetime

from aigateway.errors import AuthenticationFailed
from aigateway.keys import KeyIndex, key_from_headers
from aigateway.pipeline import Handler, Reply, RequestContext


class Authenticate:
    def __init__(self, keys: KeyIndex) -> None:
        self._keys = keys

    async def __call__(self, ctx: RequestContext, call_next: Handler) -> Reply:
        principal = self._keys.authenticate(key_from_headers(ctx.headers), datetime.now(UTC))
        if principal is None:
            raise AuthenticationFailed()
        ctx.key = principal.key
        ctx.project_name = principal.project_name
        ctx.project = principal.project
        ctx.allowed_routes = principal.allowed
        return await call_next(ctx)

"""Which route serves the request: ``model`` → route, if this key may use it."""

from __future__ import annotations

from collections.abc import Mapping

from aigateway.config.model import Route
from aigateway.errors import NotFound, PermissionDenied
from aigateway.pipeline import Handler, Reply, RequestContext


class ResolveRoute:
    def __init__(self, routes: Mapping[str, Route]) -> None:
        self._routes = routes

    async def __call__(self, ctx: RequestContext, call_next: Handler) -> Reply:
        name = ctx.body["model"]
        route = self._routes.get(name)
        if route is None:
            raise NotFound(f"The model '{_shown(name)}' does not exist.", param="model")
        if ctx.allowed_routes is not None and name not in ctx.allowed_routes:
            raise PermissionDenied(
                f"This key may not use the model '{_shown(name)}'.", param="model"
            )
        ctx.route_name = name
        ctx.route = route
        return await call_next(ctx)


def _shown(name: str) -> str:
    return name if len(name) <= 100 else name[:100] + "…"

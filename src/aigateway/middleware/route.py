"""Which route serves the request: ``model`` → route, if this key may use it."""

from __future__ import annotations

from collections.abc import Mapping

from aigateway.config.model import Route
from aigateway.errors import NotFound, PermissionDenied
from aigateway.pipeline import Handler, Reply, RequestContext


class ResolveRoute:
    """Exact names first, then wildcard routes ``prefix/*``, the longest prefix first.

    A wildcard route keeps its pattern as the route's name (allow-lists, metrics
    and logs see ``openai/*``, never the caller's free text); what followed the
    prefix becomes the upstream model of targets whose model is ``*``.
    """

    def __init__(self, routes: Mapping[str, Route]) -> None:
        self._routes = {n: r for n, r in routes.items() if not n.endswith("/*")}
        self._wildcards = sorted(
            ((n[:-1], n, r) for n, r in routes.items() if n.endswith("/*")),
            key=lambda item: -len(item[0]),
        )

    async def __call__(self, ctx: RequestContext, call_next: Handler) -> Reply:
        requested = ctx.body["model"]
        name, route = requested, self._routes.get(requested)
        if route is None:
            for prefix, pattern, candidate in self._wildcards:
                if requested.startswith(prefix) and len(requested) > len(prefix):
                    name, route = pattern, candidate
                    ctx.wildcard = requested[len(prefix) :]
                    break
        if route is None:
            raise NotFound(f"The model '{_shown(requested)}' does not exist.", param="model")
        if ctx.allowed_routes is not None and name not in ctx.allowed_routes:
            raise PermissionDenied(
                f"This key may not use the model '{_shown(requested)}'.", param="model"
            )
        ctx.route_name = name
        ctx.route = route
        return await call_next(ctx)


def _shown(name: str) -> str:
    return name if len(name) <= 100 else name[:100] + "…"

"""The chain: middlewares that apply to some keys and routes only are skipped by the rest."""

from __future__ import annotations

from typing import Any

import pytest

from aigateway.config.model import Key
from aigateway.pipeline import (
    ByKeyAndRoute,
    Handler,
    JsonReply,
    Reply,
    RequestContext,
    build_chain,
)


class Marks:
    """A selective middleware for the given (key id, route) pairs: it notes its name."""

    def __init__(self, name: str, where: set[tuple[str, str]]) -> None:
        self.name, self.where = name, where
        self.asked: list[tuple[str, str]] = []

    def applies(self, key: Key, route: str) -> bool:
        self.asked.append((key.id, route))
        return (key.id, route) in self.where

    async def __call__(self, ctx: RequestContext, call_next: Handler) -> Reply:
        ctx.guardrail_hits.append(self.name)
        return await call_next(ctx)


async def terminal(ctx: RequestContext) -> Reply:
    return JsonReply(200, {"ran": list(ctx.guardrail_hits)})


async def _read() -> bytes:
    return b""


def ctx_for(key: str | None, route: str | None) -> RequestContext:
    ctx = RequestContext("rid", "chat", {}, _read)
    ctx.key = Key(id=key, project="p", sha256="0" * 64) if key else None
    ctx.route_name = route
    return ctx


@pytest.mark.parametrize(
    ("key", "route", "ran"),
    [
        ("a", "r1", ["guard", "limits"]),
        ("a", "r2", ["guard"]),
        ("b", "r1", ["limits"]),
        ("b", "r2", []),
        ("c", "r9", []),
        (None, "r1", ["guard", "limits"]),  # not yet known: every middleware decides itself
    ],
)
async def test_each_key_and_route_runs_the_middlewares_that_apply(
    key: str | None, route: str | None, ran: list[str]
) -> None:
    guard = Marks("guard", {("a", "r1"), ("a", "r2")})
    limits = Marks("limits", {("a", "r1"), ("b", "r1")})
    handler = ByKeyAndRoute([guard, limits], terminal)
    for _ in range(3):  # built once, then reused
        reply = await handler(ctx_for(key, route))
        assert isinstance(reply, JsonReply) and reply.body == {"ran": ran}
    if key is not None:
        assert guard.asked == [(key, route)] and limits.asked == [(key, route)]


async def test_the_chains_kept_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import aigateway.pipeline as pipeline

    monkeypatch.setattr(pipeline, "MAX_CHAINS", 4)
    guard = Marks("guard", set())
    handler = ByKeyAndRoute([guard], terminal)
    for i in range(10):
        await handler(ctx_for(f"k{i}", "r"))
    chains: dict[Any, Any] = handler._chains
    assert 1 <= len(chains) <= 4


async def test_build_chain_runs_outermost_first() -> None:
    first, second = Marks("first", set()), Marks("second", set())
    reply = await build_chain([first, second], terminal)(ctx_for("a", "r"))
    assert isinstance(reply, JsonReply) and reply.body == {"ran": ["first", "second"]}

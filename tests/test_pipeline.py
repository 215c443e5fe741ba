"""The chain: middlewares that apply to some keys and routes only are skipped by the rest."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import pkgutil
from pathlib import Path
from typing import Any

import pytest

import aigateway
from aigateway.config.model import Key
from aigateway.pipeline import (
    ByKeyAndRoute,
    Handler,
    JsonReply,
    Reply,
    RequestContext,
    build_chain,
)
from aigateway.usage import Usage


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


def _written_out_inits() -> list[type]:
    """Every dataclass of the package whose ``__init__`` is its own, not generated."""
    found = []
    for info in pkgutil.walk_packages(aigateway.__path__, "aigateway."):
        if info.name.endswith("__main__"):
            continue
        for obj in vars(importlib.import_module(info.name)).values():
            if not (isinstance(obj, type) and dataclasses.is_dataclass(obj)):
                continue
            if obj.__module__ != info.name or "__init__" not in vars(obj):
                continue
            code = getattr(obj.__init__, "__code__", None)
            if code is None or code.co_filename != "<string>":  # compiled, or written
                found.append(obj)
    return sorted(found, key=lambda cls: cls.__qualname__)


WRITTEN_OUT = _written_out_inits()
SRC = Path(__file__).resolve().parent.parent / "src" / "aigateway"


def test_the_request_path_classes_write_their_inits_out() -> None:
    names = {f"{cls.__module__}.{cls.__qualname__}" for cls in WRITTEN_OUT}
    assert names >= {
        "aigateway.pipeline.RequestContext",
        "aigateway.pipeline.Attempt",
        "aigateway.pipeline.JsonReply",
        "aigateway.pipeline.StreamReply",
        "aigateway.providers.base.UpstreamRequest",
        "aigateway.providers.base.Parsed",
        "aigateway.providers.base.StreamState",
        "aigateway.quota.Plan",
        "aigateway.quota.RateStatus",
        "aigateway.quota.Admission",
        "aigateway.quota.Settlement",
    }


def _source_annotations(cls: type) -> dict[str, str]:
    """The class's field annotations as written (compiled classes keep only types)."""
    path = SRC.joinpath(*cls.__module__.split(".")[1:]).with_suffix(".py")
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
            return {
                item.target.id: ast.unparse(item.annotation)
                for item in node.body
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
            }
    raise AssertionError(f"{cls.__qualname__} not found in {path}")


def _example(annotation: str) -> object:
    """A value of the annotated type (compiled, an ``__init__`` checks its arguments' types)."""
    simple = {"str": "x", "bool": True, "int": 7, "float": 0.5, "bytes": b"x"}
    literals = {"Endpoint": "chat", "RateKind": "tokens"}
    if annotation in simple or annotation in literals:
        return {**simple, **literals}[annotation]
    if annotation.startswith(("dict[", "Mapping[")):
        return {"x": 1}
    if annotation.startswith("Callable["):
        return _read
    if annotation.startswith("Usage"):
        return Usage(3, 4)
    return object()


@pytest.mark.parametrize("cls", WRITTEN_OUT, ids=lambda cls: cls.__qualname__)
def test_a_written_out_init_sets_every_field_as_the_generated_one_would(cls: type) -> None:
    """Given its required fields, an instance holds them and every other field's
    default (a fresh list or dict each time): a field added to the class but not to
    its ``__init__`` fails here."""
    fields = dataclasses.fields(cls)
    annotations = _source_annotations(cls)
    required = {
        f.name: _example(annotations[f.name])
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    one, two = cls(**required), cls(**required)
    for f in fields:
        value = getattr(one, f.name)  # AttributeError: the __init__ forgot it
        if f.name in required:
            assert value == required[f.name], f.name  # (compiled, floats are unboxed)
        elif f.default_factory is dataclasses.MISSING:
            assert value == f.default and type(value) is type(f.default), f.name
        elif f.default_factory in (list, dict, set):
            assert value == f.default_factory() and value is not getattr(two, f.name), f.name
        else:  # e.g. a clock reading
            assert type(value) is type(f.default_factory()), f.name

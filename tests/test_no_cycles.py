"""A request leaves no reference cycle among the gateway's objects.

Each request builds a graph of objects (its context, attempts, the relay, the
hooks middlewares register on a stream). If any of them ends up in a reference
cycle, reference counting cannot free the request when it ends: the whole graph
waits for the cyclic garbage collector, whose passes then cost the server a
share of its CPU that grows with traffic (a stream guard's hook that held its
reply once cost ~9% of the server's CPU on guarded streams that way). So: every
kind of request, through every feature, with the cyclic collector off; then the
garbage it finds must hold none of the gateway's objects.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import ANTHROPIC_SECRET, KEY, Both, Gateway
from tests.fakes import Reply, anthropic_message, chunk_events, error_body

ACME = "acme: {models: [gpt-4o, with-backup, text-embedding-3-small, mock]"
FEATURES = (
    "acme: {models: [gpt-4o, with-backup, text-embedding-3-small, mock, claude-x, cached,"
    " retried, semantic],"
    " rate_limits: {rpm: 100000, tpm: 100000000, concurrency: 1000},"
    " budgets: [{window: day, usd: 1000}],"
    " guardrails: {email: redact, card: block, injection: log, responses: true}"
)
ROUTES = (
    "  cached: {targets: [{provider: up, model: gpt-4o}], cache: {ttl_s: 60}}\n"
    "  retried: {targets: [{provider: up, model: gpt-4o}], retry: again}\n"
    "  semantic: {targets: [{provider: up, model: gpt-4o}], cache: {ttl_s: 60,"
    " semantic: {embeddings: text-embedding-3-small, threshold: 0.9}}}\n"
)
RETRIES = "retry_policies: {again: {attempts: 2, initial_backoff_s: 0.01, max_backoff_s: 0.01}}\n"
PRICED = """
pricing:
  "up/gpt-4o": {input_per_mtok: 1, output_per_mtok: 2}
  "up/primary-model": {input_per_mtok: 1, output_per_mtok: 2}
  "up/backup-model": {input_per_mtok: 1, output_per_mtok: 2}
  "claude/claude-sonnet-4-5": {input_per_mtok: 3, output_per_mtok: 15}
"""


def features(log: Path) -> Callable[[str], str]:
    def edit(text: str) -> str:
        text = text.replace(ACME, FEATURES)
        text = text.replace("models:\n", "models:\n" + ROUTES, 1)
        log_line = f'prompt_log: {{path: "{log}", mode: full}}\n'
        return text.replace("providers:\n", log_line + RETRIES + "providers:\n", 1)

    return edit


@pytest.fixture
def no_collector() -> Iterator[None]:
    """The cyclic collector off for the test; what it would have found is kept."""
    # pytest keeps the last failure here and lets go of it as the test starts:
    # an earlier test's failure would show up as this one's garbage
    for name in ("last_type", "last_value", "last_traceback", "last_exc"):
        if hasattr(sys, name):
            delattr(sys, name)
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


async def _settled(gw: Gateway) -> None:
    """Until the gateway has seen the caller go (its in-flight gauge is back at 0)."""
    for _ in range(200):
        if gw.metrics.in_flight.value == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the gateway did not notice the caller leaving")


def ours(garbage: list[object]) -> list[str]:
    return sorted({type(o).__qualname__ for o in garbage if _module(o).startswith("aigateway")})


def _module(o: object) -> str:
    module = getattr(type(o), "__module__", "")
    return module if isinstance(module, str) else ""


CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi, mail me at a@b.co"}]}
MESSAGES = {
    "model": "claude-x",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "Hi, mail me at a@b.co"}],
}


CARD = {**CHAT, "messages": [{"role": "user", "content": "card 4111 1111 1111 1111"}]}
WRONG = {"Authorization": "Bearer wrong"}
#: name: (path, body, headers or None for the key's, what the upstreams answer or None)
SCENARIOS: dict[str, tuple[str, object, dict[str, str] | None, str | None]] = {
    "chat": ("/v1/chat/completions", CHAT, None, None),
    "chat-stream": ("/v1/chat/completions", {**CHAT, "stream": True}, None, None),
    "cache-hit": ("/v1/chat/completions", {**CHAT, "model": "cached"}, None, None),
    "cache-stream": (
        "/v1/chat/completions",
        {**CHAT, "model": "cached", "stream": True},
        None,
        None,
    ),
    "semantic": ("/v1/chat/completions", {**CHAT, "model": "semantic"}, None, None),
    "embeddings": (
        "/v1/embeddings",
        {"model": "text-embedding-3-small", "input": "hi"},
        None,
        None,
    ),
    "chat-to-anthropic": ("/v1/chat/completions", {**CHAT, "model": "claude-x"}, None, None),
    "chat-stream-to-anthropic": (
        "/v1/chat/completions",
        {**CHAT, "model": "claude-x", "stream": True},
        None,
        None,
    ),
    "messages": ("/v1/messages", MESSAGES, None, None),
    "messages-stream": ("/v1/messages", {**MESSAGES, "stream": True}, None, None),
    "messages-stream-to-openai": (
        "/v1/messages",
        {**MESSAGES, "model": "gpt-4o", "stream": True},
        None,
        None,
    ),
    "failover": ("/v1/chat/completions", {**CHAT, "model": "with-backup"}, None, "fail"),
    "retried": ("/v1/chat/completions", {**CHAT, "model": "retried"}, None, "fail"),
    "retried-stream": (
        "/v1/chat/completions",
        {**CHAT, "model": "retried", "stream": True},
        None,
        "fail",
    ),
    "caller-leaves": ("/v1/chat/completions", {**CHAT, "stream": True}, None, "slow"),
    "stream-cut": ("/v1/chat/completions", {**CHAT, "stream": True}, None, "cut"),
    "messages-stream-cut": ("/v1/messages", {**MESSAGES, "stream": True}, None, "cut"),
    "blocked": ("/v1/chat/completions", CARD, None, None),
    "bad-json": ("/v1/chat/completions", b"{not json", None, None),
    "unknown-model": ("/v1/chat/completions", {**CHAT, "model": "nope"}, None, None),
    "bad-key": ("/v1/chat/completions", CHAT, WRONG, None),
    "bad-key-messages": ("/v1/messages", MESSAGES, {"x-api-key": ANTHROPIC_SECRET}, None),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_requests_leave_no_cycles(
    both: Both, tmp_path: Path, no_collector: None, name: str
) -> None:
    gw, fake = await both(extra=PRICED, edit=features(tmp_path / "p.sqlite"))
    path, body, headers, upstream = SCENARIOS[name]
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = {**(headers or {"Authorization": f"Bearer {KEY}"}), "content-type": "application/json"}
    statuses: list[int] = []
    async with aiohttp.ClientSession() as session:
        for _ in range(3):  # the first builds what stays (compiled rules, pools)
            if upstream == "fail":
                gw.upstream.script.append(
                    Reply(status=500, body=error_body("down", "server_error"))
                )
            elif upstream == "cut":
                gw.upstream.script.append(Reply(events=chunk_events(), drop="mid"))
                fake.script.append(Reply(body=anthropic_message(), drop="mid"))
            elif upstream == "slow":  # the caller leaves after the first event
                gate = asyncio.Event()
                gw.upstream.script.append(Reply(events=chunk_events(), gate=gate))
            async with session.post(gw.root + path, data=data, headers=sent) as resp:
                statuses.append(resp.status)
                if upstream == "slow":
                    await resp.content.readline()
                    resp.close()
                    await _settled(gw)
                    gate.set()
                    continue
                await resp.read()
    assert len(set(statuses)) == 1
    gc.set_debug(gc.DEBUG_SAVEALL)
    gc.collect()
    import collections

    print(
        "GARBAGE",
        name,
        ours(gc.garbage),
        collections.Counter(type(o).__name__ for o in gc.garbage).most_common(12),
    )
    assert ours(gc.garbage) == []

"""The chat request fast check (``parse.plain_chat``) against the schema it shortcuts.

Whatever the fast check accepts the schema must accept, with the same ``stream``
and ``include_usage``; what it is unsure of goes to the schema, which words the
error. Common requests must take the fast way (or it saves nothing).
"""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from aigateway.errors import InvalidRequest
from aigateway.middleware.parse import plain_chat
from aigateway.wire import validate_chat

USER = {"role": "user", "content": "Hi"}
BASE: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [USER]}
PART = {"type": "text", "text": "x"}


def schema(body: dict[str, Any]) -> tuple[bool, bool] | None:
    try:
        req = validate_chat(body)
    except InvalidRequest:
        return None
    return req.stream, bool(req.stream_options and req.stream_options.include_usage)


COMMON: list[tuple[str, dict[str, Any], tuple[bool, bool]]] = [
    ("minimal", BASE, (False, False)),
    ("stream", {**BASE, "stream": True}, (True, False)),
    (
        "stream with usage",
        {**BASE, "stream": True, "stream_options": {"include_usage": True}},
        (True, True),
    ),
    ("stream_options null", {**BASE, "stream_options": None}, (False, False)),
    ("stream_options without usage", {**BASE, "stream_options": {}}, (False, False)),
    (
        "a conversation, as the SDKs send it",
        {
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "Be terse."},
                {"role": "developer", "content": "Answer in French."},
                {"role": "user", "content": "Weather?", "name": "ana"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "weather", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "content": "sunny", "tool_call_id": "call_1"},
                {"role": "function", "content": "old style", "name": "weather"},
                {"role": "assistant"},
            ],
            "temperature": 0.2,
            "tools": [{"type": "function", "function": {"name": "weather", "parameters": {}}}],
            "max_tokens": 100,
            "max_completion_tokens": 200,
            "n": 128,
            "response_format": {"type": "json_object"},
            "user": "u-1",
            "metadata": None,
        },
        (False, False),
    ),
    ("limits null", {**BASE, "max_tokens": None, "n": None}, (False, False)),
    ("unknown fields of any name", {**BASE, "_x": 1, "model_config": 2}, (False, False)),
    ("a 256-character model", {**BASE, "model": "m" * 256}, (False, False)),
    ("a model name with spaces and accents", {**BASE, "model": "my modèle 7b"}, (False, False)),
]


@pytest.mark.parametrize(("body", "expected"), [c[1:] for c in COMMON], ids=[c[0] for c in COMMON])
def test_common_requests_take_the_fast_way_with_the_schemas_verdict(
    body: dict[str, Any], expected: tuple[bool, bool]
) -> None:
    assert plain_chat(body) == expected
    assert schema(body) == expected


UNSURE: list[tuple[str, dict[str, Any]]] = [
    ("no model", {"messages": [USER]}),
    ("empty model", {**BASE, "model": ""}),
    ("model too long", {**BASE, "model": "m" * 257}),
    ("model with a newline", {**BASE, "model": "gpt\n"}),
    ("model with DEL", {**BASE, "model": "gpt\x7f"}),
    ("model with a non-breaking space (valid, but not printable)", {**BASE, "model": "a\xa0b"}),
    ("model not a string", {**BASE, "model": 4}),
    ("no messages", {"model": "m"}),
    ("empty messages", {**BASE, "messages": []}),
    ("messages not a list", {**BASE, "messages": {"role": "user"}}),
    ("a message not an object", {**BASE, "messages": ["hi"]}),
    ("no role", {**BASE, "messages": [{"content": "x"}]}),
    ("unknown role", {**BASE, "messages": [{"role": "robot", "content": "x"}]}),
    ("role not a string", {**BASE, "messages": [{"role": 1, "content": "x"}]}),
    ("content parts (valid)", {**BASE, "messages": [{"role": "user", "content": [PART]}]}),
    ("content a number", {**BASE, "messages": [{"role": "user", "content": 5}]}),
    ("name a number", {**BASE, "messages": [{"role": "user", "content": "x", "name": 1}]}),
    ("stream null", {**BASE, "stream": None}),
    ("stream a number", {**BASE, "stream": 1}),
    ("stream a string", {**BASE, "stream": "true"}),
    ("stream_options a list", {**BASE, "stream_options": []}),
    ("include_usage null", {**BASE, "stream_options": {"include_usage": None}}),
    ("include_usage a number", {**BASE, "stream_options": {"include_usage": 1}}),
    ("max_tokens 0", {**BASE, "max_tokens": 0}),
    ("max_tokens true", {**BASE, "max_tokens": True}),
    ("max_tokens a float", {**BASE, "max_tokens": 5.0}),
    ("max_tokens huge (valid)", {**BASE, "max_tokens": 2**64}),
    ("max_completion_tokens negative", {**BASE, "max_completion_tokens": -1}),
    ("n 0", {**BASE, "n": 0}),
    ("n 129", {**BASE, "n": 129}),
]


@pytest.mark.parametrize("body", [c[1] for c in UNSURE], ids=[c[0] for c in UNSURE])
def test_anything_else_is_left_to_the_schema(body: dict[str, Any]) -> None:
    assert plain_chat(body) is None


def _mutations(rng: random.Random) -> list[Any]:
    return [
        None, True, False, 0, 1, -1, 2, 128, 129, 2**63, 0.5, 5.0, "", "x", "user",
        "assistant", "gpt\n", "m" * 257, [], [USER], {}, {"include_usage": True},
        {"include_usage": 1}, [{"type": "text"}], rng.random(),
    ]  # fmt: skip


def _container(body: Any, path: tuple[str | int, ...]) -> Any:
    """What ``path`` leads to in ``body``, or None where it leads nowhere."""
    for step in path:
        if isinstance(body, dict) and isinstance(step, str):
            body = body.get(step)
        elif isinstance(body, list) and isinstance(step, int) and step < len(body):
            body = body[step]
        else:
            return None
    return body


def test_what_the_fast_way_accepts_the_schema_accepts_the_same() -> None:
    """Random single and double changes of valid requests: the fast check and the
    schema never disagree on a body the fast check accepts."""
    rng = random.Random(1337)
    paths: list[tuple[str | int, ...]] = [
        ("model",), ("messages",), ("stream",), ("stream_options",),
        ("stream_options", "include_usage"), ("max_tokens",), ("max_completion_tokens",),
        ("n",), ("messages", 0), ("messages", 0, "role"), ("messages", 0, "content"),
        ("messages", 0, "name"), ("messages", 1, "role"), ("messages", 1, "content"),
    ]  # fmt: skip
    start: dict[str, Any] = {
        "model": "m",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "system", "content": "s"}, USER],
    }
    fast = 0
    for _ in range(3000):
        body = copy.deepcopy(start)
        for _ in range(rng.choice((1, 2))):
            path = rng.choice(paths)
            target = _container(body, path[:-1])
            if isinstance(target, dict):
                if rng.random() < 0.2:
                    target.pop(path[-1], None)
                else:
                    target[path[-1]] = rng.choice(_mutations(rng))
            elif isinstance(target, list) and isinstance(path[-1], int) and path[-1] < len(target):
                target[path[-1]] = rng.choice(_mutations(rng))
        verdict = plain_chat(body)
        if verdict is not None:
            fast += 1
            assert schema(body) == verdict, body
    assert 300 < fast < 2700  # both ways were exercised

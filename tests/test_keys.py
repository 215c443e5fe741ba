from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aigateway.config.model import Key, Project
from aigateway.keys import KeyIndex, digest, key_from_headers, new_key


def test_new_keys_are_random_and_prefixed() -> None:
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(k.startswith("aig-") and len(k) >= 40 for k in keys)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"authorization": "Bearer abc"}, "abc"),
        ({"authorization": "bearer abc"}, "abc"),
        ({"authorization": "  Bearer   abc  "}, "abc"),
        ({"authorization": "Basic abc"}, None),
        ({"authorization": "Bearer"}, None),
        ({"authorization": "Bearer "}, None),
        ({"x-api-key": "abc"}, "abc"),
        ({"x-api-key": " "}, None),
        ({"authorization": "Basic x", "x-api-key": "abc"}, "abc"),
        ({}, None),
    ],
)
def test_key_from_headers(headers: dict[str, str], expected: str | None) -> None:
    assert key_from_headers(headers) == expected


def test_index_allow_lists_and_expiry() -> None:
    projects = {"p": Project(models=["a", "b"]), "q": Project()}
    now = datetime(2026, 1, 1, tzinfo=UTC)
    keys = [
        Key(id="k1", project="p", sha256=digest("one")),
        Key(id="k2", project="p", sha256=digest("two"), models=["b", "c"]),
        Key(id="k3", project="q", sha256=digest("three")),
        Key(
            id="k4", project="q", sha256=digest("four"), expires_at=datetime(2026, 1, 1, tzinfo=UTC)
        ),
        Key(id="k5", project="q", sha256=digest("five"), disabled=True),
    ]
    index = KeyIndex(keys, projects)
    one = index.authenticate("one", now)
    assert one is not None and one.allowed == frozenset({"a", "b"})
    two = index.authenticate("two", now)
    assert two is not None and two.allowed == frozenset({"b"})
    three = index.authenticate("three", now)
    assert three is not None and three.allowed is None and three.may_use("anything")
    assert index.authenticate("four", now) is None  # expires at exactly now
    assert index.authenticate("five", now) is None
    assert index.authenticate("nope", now) is None
    assert index.authenticate("x" * 10_000, now) is None
    assert index.authenticate("\udcff", now) is None  # lone surrogate: no crash

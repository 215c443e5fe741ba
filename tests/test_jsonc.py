"""jsonc gives what json gives: the same text out, the same values and errors in."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from aigateway.jsonc import dumpb, dumps, loader, loads, quoteb

VALUES: list[Any] = [
    {},
    [],
    "",
    0,
    -1.5,
    1e300,
    10**40,
    True,
    None,
    {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
    {"text": 'é ü 中文 \U0001f600 \u2028 "quoted" back\\slash \n\t\x00'},
    {"nested": {"a": [1, 2, {"b": None}], "c": False}},
    {1: "int key", 2.5: "float key", None: "none key", False: "bool key"},
    {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")},
    [0.1, 1 / 3, -0.0, 5e-324],
]


@pytest.mark.parametrize("value", VALUES)
def test_dumps_matches_json(value: Any) -> None:
    want = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    assert dumps(value) == want
    assert dumpb(value) == want.encode()


@pytest.mark.parametrize("text", ["\ud83d", "a \ude00 b", "\ud83d\ude00 \U0001f600 é"])
def test_lone_surrogates_are_written_escaped(text: str) -> None:
    """Half of a pair (a provider may split one between two chunks' escapes) cannot
    be UTF-8: it is written as its escape, and reads back as it was."""
    for value in ({"content": text}, [text]):
        out = dumpb(value)
        assert json.loads(out) == json.loads(json.dumps(value))  # as json itself writes it
        assert b"\\ud" in out
    out = quoteb(text)
    assert json.loads(out) == json.loads(json.dumps(text)) and out.startswith(b'"')
    assert quoteb("é \U0001f600") == '"é \U0001f600"'.encode()  # kept as UTF-8


def test_dumps_rejects_what_json_rejects() -> None:
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        dumps({"a": {1, 2}})


TEXTS = [
    '{"a": 1}',
    '  {"a": [1, 2.5, "x", null, true, false]}  \n',
    "[]",
    '"just a string"',
    "12",
    '{"u": "\\u00e9\\ud83d\\ude00", "raw": "é"}',
    "\t\r\n 0 \t\r\n",
]


@pytest.mark.parametrize("text", TEXTS)
def test_loads_matches_json(text: str) -> None:
    assert loads(text) == json.loads(text)
    assert loads(text.encode()) == json.loads(text.encode())
    assert loads(b"\xef\xbb\xbf" + text.encode()) == json.loads(b"\xef\xbb\xbf" + text.encode())


BAD = ["", "   ", "{", '{"a": 1} x', '{"a": 1}{}', "[1,]", "nul", "{'a': 1}", '"\\x"']


@pytest.mark.parametrize("text", BAD)
def test_loads_errors_like_json(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as ours:
        loads(text)
    with pytest.raises(json.JSONDecodeError) as theirs:
        json.loads(text)
    assert (ours.value.msg, ours.value.pos) == (theirs.value.msg, theirs.value.pos)


def test_loads_bad_utf8_is_a_value_error() -> None:
    with pytest.raises(UnicodeDecodeError):
        loads(b'{"a": "\xff"}')


def test_loader_keeps_the_decoders_options() -> None:
    def reject(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    strict = loader(json.JSONDecoder(parse_constant=reject))
    with pytest.raises(ValueError, match="NaN is not valid JSON"):
        strict('{"a": NaN}')
    assert math.isnan(loads('{"a": NaN}')["a"])
    assert strict('{"a": 1}') == {"a": 1}

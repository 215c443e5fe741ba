"""JSON in and out on the request path: what ``json`` does, minus its per-call setup.

``json.dumps`` with any option (compact separators, ``ensure_ascii=False``) builds
a new encoder on every call, and ``json.loads`` of bytes detects the encoding and
matches whitespace twice; on a gateway that parses and writes several small
bodies per request that setup costs more than the work itself. These helpers
keep one C encoder and one C scanner and give the same results:

- ``dumps``: ``json.dumps(obj, separators=(",", ":"), ensure_ascii=False)``;
- ``loads``: ``json.loads`` for text or UTF-8 bytes (a UTF-8 byte-order mark is
  skipped, as ``json.loads`` does for bytes), raising ``json.JSONDecodeError``.

Objects must not contain themselves (the encoder does not look for cycles: what
it encodes was parsed from JSON or built from such data).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

_c_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
_c_quote: Any = getattr(json.encoder, "c_encode_basestring", None)
#: a str as a JSON string literal, non-ASCII kept (what ``dumps`` writes for one)
quote: Callable[[str], str] = json.encoder.encode_basestring
_WS = re.compile(r"[ \t\n\r]*")
_SPACE = frozenset(" \t\n\r")
_BOM = b"\xef\xbb\xbf"


def _default(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


#: (markers, default, encoder, indent, key separator, item separator, sort_keys,
#:  skipkeys, allow_nan): json.dumps's own C encoder, made once
_encode: Any = (
    _c_make_encoder(None, _default, _c_quote, None, ":", ",", False, False, True)
    if _c_make_encoder is not None and _c_quote is not None
    else None  # (CPython always has the C accelerator)
)
_slow = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def dumps(obj: Any) -> str:
    if _encode is None:  # pragma: no cover
        return _slow(obj)
    return "".join(_encode(obj, 0))


_ascii = json.JSONEncoder(separators=(",", ":")).encode


def dumpb(obj: Any) -> bytes:
    """``dumps`` as UTF-8 bytes (a request or response body). A lone surrogate
    (half of a pair, as a provider may split one between two chunks' escapes) is
    written as its ``\\u`` escape: UTF-8 cannot hold it."""
    text = dumps(obj)
    try:
        return text.encode()
    except UnicodeEncodeError:
        return _ascii(obj).encode()


def quoteb(text: str) -> bytes:
    """``quote`` as UTF-8 bytes; a lone surrogate as its ``\\u`` escape."""
    try:
        return quote(text).encode()
    except UnicodeEncodeError:
        return json.encoder.encode_basestring_ascii(text).encode()


def _skip(text: str, at: int) -> int:
    """Where the whitespace starting at ``at`` ends (the pattern always matches)."""
    found = _WS.match(text, at)
    return found.end() if found is not None else at


def loader(decoder: json.JSONDecoder) -> Callable[[str | bytes], Any]:
    """A ``loads`` with ``decoder``'s options (hooks, constants) and its own errors."""
    scan: Callable[[str, int], tuple[Any, int]] = decoder.scan_once  # type: ignore[attr-defined]

    def loads(data: str | bytes) -> Any:
        if isinstance(data, str):
            text = data
        else:
            text = (data[3:] if data.startswith(_BOM) else data).decode("utf-8")
        start = _skip(text, 0) if text[:1] in _SPACE else 0
        try:
            value, end = scan(text, start)
        except StopIteration as exc:
            raise json.JSONDecodeError("Expecting value", text, exc.value) from None
        if end != len(text):
            end = _skip(text, end)
            if end != len(text):
                raise json.JSONDecodeError("Extra data", text, end)
        return value

    return loads


loads = loader(json.JSONDecoder())

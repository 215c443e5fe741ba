from __future__ import annotations

import pytest

from aigateway.sse import SSEDecoder, SSEError, SSEEvent, encode_event

STREAM = (
    b'data: {"a":1}\n\n'
    b": a comment\n\n"
    b'event: message_start\ndata: {"b":2}\n\n'
    b"data: line one\ndata: line two\n\n"
    b"data: [DONE]\n\n"
)
EXPECTED = [
    SSEEvent(b'{"a":1}'),
    SSEEvent(b'{"b":2}', "message_start"),
    SSEEvent(b"line one\nline two"),
    SSEEvent(b"[DONE]"),
]


def decode(pieces: list[bytes]) -> list[SSEEvent]:
    d = SSEDecoder()
    out: list[SSEEvent] = []
    for p in pieces:
        out += d.feed(p)
    return out + d.end()


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64, 10_000])
def test_any_slicing_gives_the_same_events(size: int) -> None:
    pieces = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert decode(pieces) == EXPECTED


@pytest.mark.parametrize("newline", [b"\r\n", b"\r"])
@pytest.mark.parametrize("size", [1, 3, 10_000])
def test_crlf_and_cr_line_endings(newline: bytes, size: int) -> None:
    stream = STREAM.replace(b"\n", newline)
    pieces = [stream[i : i + size] for i in range(0, len(stream), size)]
    assert decode(pieces) == EXPECTED


def test_final_event_without_blank_line_counts_at_end() -> None:
    assert decode([b"data: x\n\ndata: y"]) == [SSEEvent(b"x"), SSEEvent(b"y")]


def test_no_space_after_colon_and_unknown_fields() -> None:
    assert decode([b"data:x\nid: 3\nretry: 10\n\n"]) == [SSEEvent(b"x")]


def test_oversized_event_is_an_error_not_a_growing_buffer() -> None:
    d = SSEDecoder(max_event_bytes=100)
    with pytest.raises(SSEError):
        d.feed(b"data: " + b"x" * 200)


def test_encode_roundtrip() -> None:
    raw = encode_event(b'{"x":1}', "delta") + encode_event(b"[DONE]")
    assert decode([raw]) == [SSEEvent(b'{"x":1}', "delta"), SSEEvent(b"[DONE]")]

"""Server-sent events, sans-IO: feed bytes in any slicing, get whole events out.

Follows the WHATWG grammar the SDKs use: events end at a blank line; lines end in
CRLF, LF or CR; ``data`` lines join with LF; lines starting with ':' are comments.
Memory is bounded: an event larger than ``max_event_bytes`` is an error, never an
unbounded buffer.
"""

from __future__ import annotations

from typing import NamedTuple

from aigateway.octets import CR, LF


class SSEError(ValueError):
    pass


class SSEEvent(NamedTuple):
    data: bytes
    event: str | None = None


class SSEDecoder:
    def __init__(self, max_event_bytes: int = 16 * 1024 * 1024) -> None:
        self._buf = b""
        #: pieces of an unfinished line, joined once a line break arrives (no quadratic copy)
        self._parts: list[bytes] = []
        self._size = 0
        self._max = max_event_bytes

    def feed(self, data: bytes) -> list[SSEEvent]:
        if LF not in data and CR not in data:
            self._parts.append(data)
            self._size += len(data)
            if len(self._buf) + self._size > self._max:
                raise SSEError(f"an event is larger than {self._max} bytes")
            return []
        if self._parts:
            data = b"".join(self._parts) + data
            self._parts.clear()
            self._size = 0
        buf = self._buf + data if self._buf else data
        if CR in buf:
            # A CR at the very end may be the first half of a CRLF: keep it back.
            held = buf.endswith(b"\r")
            if held:
                buf = buf[:-1]
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if held:
                buf += b"\r"
        blocks = buf.split(b"\n\n")
        self._buf = blocks.pop()
        if len(self._buf) > self._max:
            raise SSEError(f"an event is larger than {self._max} bytes")
        events: list[SSEEvent] = []
        for block in blocks:
            if block[:6] == b"data: " and LF not in block:
                events.append(SSEEvent(block[6:]))  # the common case: one data line
            else:
                event = _parse_block(block)
                if event is not None:
                    events.append(event)
        return events

    def end(self) -> list[SSEEvent]:
        """The stream closed: a final event without its blank line still counts."""
        rest = (self._buf + b"".join(self._parts)).rstrip(b"\r\n")
        self._buf, self._parts, self._size = b"", [], 0
        if not rest:
            return []
        event = _parse_block(rest.replace(b"\r\n", b"\n").replace(b"\r", b"\n"))
        return [event] if event is not None else []


def _parse_block(block: bytes) -> SSEEvent | None:
    data: list[bytes] = []
    event: str | None = None
    for line in block.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        field, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            event = value.decode("utf-8", "replace")
    if not data and event is None:
        return None
    return SSEEvent(b"\n".join(data), event)


def encode_event(data: bytes, event: str | None = None) -> bytes:
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + data + b"\n\n"

"""The gateway's HTTP/1.1 client for upstream calls: pooled keep-alive connections
on asyncio protocols, with only what a call to a provider needs.

Why not aiohttp's client: on the benchmark's machine its per-request Python work
(request and response objects, multidicts, URL objects, cookie and trace hooks,
a writer task per request) cost more than the whole rest of a bare proxy; this
client does a request in a few dozen lines of compiled code (docs/benchmarks.md).

What it does:
- one pool of connections for all upstreams together, at most ``max_connections``
  open (active, idle or connecting; more callers wait for one), idle ones kept for
  ``keepalive_s`` and reused newest first; TLS with the system's certificate store;
- a request written in one go (``Host``, ``Content-Length``, ``User-Agent`` and
  ``Accept-Encoding`` set here; header names and values checked: no line breaks);
- responses framed by ``Content-Length``, chunked transfer coding, or the end of
  the connection; 1xx responses skipped; ``gzip`` and ``deflate`` bodies decoded
  (their output produced as it is read, so a small body cannot fill memory);
- at most ``HIGH_WATER`` body bytes held per response: past it the socket is not
  read until the caller has taken what is held (a slow caller slows the upstream);
- timeouts: ``connect_s`` for the connection (TLS included), ``read_s`` for any
  silence of the upstream while a response is awaited or read (one timer per
  connection, checked when it fires, not re-armed per read), ``total_s`` for the
  whole exchange;
- every failure is a gateway error (``UpstreamConnectError`` before any response
  byte, ``UpstreamTimeout``, ``UpstreamProtocolError``) whose message holds no
  header, URL or body; a connection that failed, or whose body was not read to
  its end, is closed, never reused.

Errors are kept as what happened (a class and a message) and raised anew where the
caller waits: no exception, with its traceback, is kept by a future or a connection.
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
import zlib
from collections import deque
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from aigateway.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from aigateway.octets import SPACE, TAB

#: largest response head (status line and headers)
MAX_HEAD_BYTES: Final = 64 * 1024
#: body bytes held for the caller before the socket is paused
HIGH_WATER: Final = 256 * 1024
#: longest chunk-size line of a chunked body
MAX_CHUNK_LINE: Final = 4096
#: largest non-streamed body read by default
MAX_RESPONSE_BYTES: Final = 256 * 1024 * 1024
#: parsed upstream URLs kept (a config has a few; reloads make more)
_MAX_TARGETS: Final = 4096

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # (fullmatch: "$" passes a "\n")
#: request headers this client writes itself (one of the caller's would be a second)
_OWN = frozenset({"host", "content-length", "transfer-encoding", "connection"})

# connection phases
_IDLE: Final = 0
_HEAD: Final = 1
_BODY: Final = 2
_DONE: Final = 3
_BROKEN: Final = 4
# body framings
_LENGTH: Final = 0
_CHUNKED: Final = 1
_TO_CLOSE: Final = 2
_NONE: Final = 3
# chunked-coding states
_SIZE: Final = 0
_DATA: Final = 1
_DATA_END: Final = 2
_TRAILER: Final = 3


class _Target:
    """Where a URL's requests go, parsed once."""

    __slots__ = ("authorization", "host", "host_header", "key", "path", "port", "tls")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("not an http(s) URL")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        default = 443 if self.tls else 80
        self.port = parts.port or default  # (an invalid port raises ValueError)
        name = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = name if self.port == default else f"{name}:{self.port}"
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.key = f"{parts.scheme}://{self.host}:{self.port}"
        self.authorization: str | None = None
        if parts.username is not None:  # user:password@ in the URL: basic credentials
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self.authorization = "Basic " + base64.b64encode(pair.encode()).decode()


class _Failure:
    """What went wrong, kept as a class and a message (raised anew each time)."""

    __slots__ = ("kind", "message")

    def __init__(self, kind: type[UpstreamError], message: str) -> None:
        self.kind = kind
        self.message = message

    def error(self) -> UpstreamError:
        return self.kind(self.message)


_BROKE = "The provider's connection broke during the response."
_UNREADABLE = "The provider's answer could not be read."
_SILENT = "The provider did not answer in time."


class Response:
    """One upstream response: status and headers (names lower-cased), its body
    read as it arrives. ``release()`` hands the connection back (or closes it)."""

    def __init__(self, conn: Connection, status: int, headers: dict[str, str]) -> None:
        self.status = status
        self.headers: Mapping[str, str] = headers
        self._conn: Connection | None = conn

    async def read(self, limit: int = MAX_RESPONSE_BYTES) -> bytes:
        parts: list[bytes] = []
        size = 0
        while True:
            data = await self.read_chunk()
            if not data:
                return b"".join(parts)
            size += len(data)
            if size > limit:
                raise UpstreamProtocolError(
                    f"The provider's response is larger than {limit} bytes."
                )
            parts.append(data)

    async def read_chunk(self) -> bytes:
        """The body bytes held now (waiting for some if none is); b"" at its end."""
        conn = self._conn
        if conn is None:
            return b""
        while True:
            data = conn.take()
            if data:
                return data
            if conn.failure is not None:
                raise conn.failure.error()
            if conn.phase == _DONE:
                return b""
            if conn.phase == _BROKEN:
                raise UpstreamProtocolError(_BROKE)
            await conn.wait()

    def at_eof(self) -> bool:
        conn = self._conn
        return conn is None or (conn.phase == _DONE and not conn.held())

    def release(self) -> None:
        """Done with the response: the connection goes back to the pool if its body
        was read to the end, else it is closed."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.finish()


class Connection:
    """One connection to an upstream, and the asyncio protocol reading it."""

    def __init__(self, pool: Pool, key: str) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.phase = _IDLE
        self.failure: _Failure | None = None
        self.idle_since = 0.0
        self.counted = True
        #: the request was HEAD: its response has no body whatever its headers say
        self.no_body = False
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None
        self._head = bytearray()
        self._got_bytes = False
        self._status = 0
        self._headers: dict[str, str] = {}
        self._reusable = False
        # the body
        self._framing = _NONE
        self._left = 0  # bytes left of the body (LENGTH) or of the chunk (CHUNKED)
        self._chunk_state = _SIZE
        self._line = bytearray()  # a chunk-size or trailer line so far
        self._held: deque[bytes] = deque()
        self._held_bytes = 0
        self._paused = False
        self._decoder: Any = None  # zlib.decompressobj, if the body is encoded
        self._zpending = b""  # encoded bytes the decoder has not taken yet
        self._body_ended = False  # the framing says the body is complete
        # timeouts
        self._read_s = 0.0
        self._deadline: float | None = None
        self._last_io = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # --- the protocol --------------------------------------------------------------

    def factory(self) -> Any:
        """For ``create_connection`` (the connection is its own protocol; a compiled
        class cannot subclass asyncio's, which only names the methods)."""
        return self

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._last_io = self._loop.time()
        self._got_bytes = True
        phase = self.phase
        if phase == _BODY:
            self._body(data)
        elif phase == _HEAD:
            self._head += data
            self._parse_head()
        else:  # bytes nobody asked for (idle, or past the body): not HTTP we can reuse
            self._fail(_Failure(UpstreamProtocolError, _UNREADABLE))

    def eof_received(self) -> bool:
        return False  # the transport closes; connection_lost says what it meant

    def connection_lost(self, exc: BaseException | None) -> None:
        self.transport = None
        if self.phase == _BODY and self._framing == _TO_CLOSE and exc is None:
            self._body_ended = True
            self._settle()
        elif self.phase in (_HEAD, _BODY):
            if self.phase == _HEAD and not self._got_bytes:
                self._fail(_Failure(UpstreamConnectError, "Could not reach the provider."))
            else:
                self._fail(_Failure(UpstreamProtocolError, _BROKE))
        elif self.phase == _IDLE:
            self.phase = _BROKEN
        self._stop_timer()
        self.pool.lost(self)

    def pause_writing(self) -> None:
        pass  # requests are written whole (bodies are bounded by max_body_bytes)

    def resume_writing(self) -> None:
        pass

    # --- one exchange --------------------------------------------------------------

    async def exchange(
        self, head: bytes, body: bytes, read_s: float, deadline: float | None
    ) -> Response:
        """Send a request; its response once the head has arrived."""
        transport = self.transport
        if transport is None or transport.is_closing():
            raise UpstreamConnectError("Could not reach the provider.")
        self.phase = _HEAD
        self._got_bytes = False
        self._read_s, self._deadline = read_s, deadline
        self._last_io = self._loop.time()
        self._arm(self._last_io)
        if len(body) < 65536:
            transport.write(head + body)
        else:  # (not copied to join it to the head)
            transport.write(head)
            transport.write(body)
        while self.phase == _HEAD and self.failure is None:
            await self.wait()
        if self.failure is not None:
            raise self.failure.error()
        response = Response(self, self._status, self._headers)
        self._headers = {}
        return response

    async def wait(self) -> None:
        waiter = self._waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def take(self) -> bytes:
        """The body bytes held, all of them (b"" if none)."""
        if not self._held:
            if self._zpending:
                self._inflate(b"")
            if not self._held:
                return b""
        held = self._held
        data = held.popleft() if len(held) == 1 else b"".join(held)
        held.clear()
        self._held_bytes = 0
        if self._zpending:
            self._inflate(b"")
        if self._paused and self._held_bytes < HIGH_WATER and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    def held(self) -> bool:
        return bool(self._held) or bool(self._zpending)

    def finish(self) -> None:
        """The caller is done: back to the pool if all was read and the upstream
        keeps the connection open, else closed."""
        self._stop_timer()
        clean = (
            self.phase == _DONE
            and self.failure is None
            and self._reusable
            and not self.held()
            and self.transport is not None
            and not self.transport.is_closing()
        )
        if clean:
            self._reset()
            self.pool.put(self)
        else:
            self.close()

    def close(self) -> None:
        self.phase = _BROKEN
        self._stop_timer()
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.abort()  # (connection_lost follows, in a later loop turn)
        self.pool.lost(self)

    def usable(self, now: float, keepalive_s: float) -> bool:
        transport = self.transport
        return (
            self.phase == _IDLE
            and transport is not None
            and not transport.is_closing()
            and now - self.idle_since < keepalive_s
        )

    # --- reading ---------------------------------------------------------------

    def _parse_head(self) -> None:
        while self.phase == _HEAD:
            buf = self._head
            end = buf.find(b"\r\n\r\n")
            if end < 0 or end > MAX_HEAD_BYTES:
                if len(buf) > MAX_HEAD_BYTES:
                    self._fail(_Failure(UpstreamProtocolError, _UNREADABLE))
                return
            head = bytes(buf[:end])
            rest = bytes(buf[end + 4 :])
            self._head = bytearray()
            if not self._read_head(head):
                self._fail(_Failure(UpstreamProtocolError, _UNREADABLE))
                return
            if 100 <= self._status < 200:  # informational (100 Continue, 103): skipped
                self._head = bytearray(rest)
                continue
            self.phase = _BODY
            if self._framing == _NONE:
                self._body_ended = True
                self._settle()
                if rest:
                    self._reusable = False  # bytes after a body-less response
            self._wake()
            if rest and self.phase == _BODY:
                self._body(rest)
            return

    def _read_head(self, head: bytes) -> bool:
        """Status and headers read; the body's framing decided (RFC 9112 6.3)."""
        lines = head.split(b"\r\n")
        status_line = lines[0]
        if not status_line.startswith(b"HTTP/1.") or len(status_line) < 12:
            return False
        code = status_line[9:12]
        if not code.isdigit() or status_line[12:13] not in (b"", b" "):
            return False
        self._status = int(code)
        http10 = status_line[7:8] == b"0"
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or SPACE in name or TAB in name:
                return False  # no colon, a space in the name, or an obsolete folded line
            key = name.decode("latin-1").lower()
            text = value.strip(b" \t").decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        self._headers = headers
        tokens = headers.get("connection", "").lower()
        self._reusable = ("keep-alive" in tokens) if http10 else ("close" not in tokens)
        encoding = headers.get("transfer-encoding")
        length = headers.get("content-length")
        self._decoder, self._zpending = None, b""
        if self.no_body or self._status in (204, 304) or self._status < 200:
            self._framing = _NONE
        elif encoding is not None:
            if encoding.lower().rsplit(",", 1)[-1].strip() == "chunked":
                self._framing, self._chunk_state, self._left = _CHUNKED, _SIZE, 0
            else:
                self._framing, self._reusable = _TO_CLOSE, False
            if length is not None:
                self._reusable = False  # both: the length is ignored, and so is the rest
        elif length is not None:
            values = {v.strip() for v in length.split(",")}
            if len(values) != 1:
                return False
            (size,) = values
            if not size.isdigit() or not size.isascii():
                return False
            self._framing, self._left = _LENGTH, int(size)
            if self._left == 0:
                self._framing = _NONE
        else:
            self._framing, self._reusable = _TO_CLOSE, False
        if self._framing != _NONE and self._status >= 200:
            return self._choose_decoder(headers.get("content-encoding"))
        return True

    def _choose_decoder(self, coding: str | None) -> bool:
        coding = (coding or "identity").strip().lower()
        if coding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif coding == "deflate":
            self._decoder = "deflate"  # zlib-wrapped or raw: known from the first bytes
        elif coding != "identity":
            return False  # not asked for (Accept-Encoding names gzip and deflate)
        return True

    def _body(self, data: bytes) -> None:
        framing = self._framing
        if framing == _LENGTH:
            left = self._left
            if len(data) > left:
                self._fail(_Failure(UpstreamProtocolError, _UNREADABLE))  # more than said
                return
            self._left = left - len(data)
            self._deliver(data)
            if self._left == 0:
                self._body_ended = True
                self._settle()
        elif framing == _CHUNKED:
            self._chunked(data)
        else:
            self._deliver(data)

    def _chunked(self, data: bytes) -> None:
        at, size = 0, len(data)
        while at < size:
            state = self._chunk_state
            if state == _DATA:
                take = min(self._left, size - at)
                self._deliver(data[at : at + take] if take < size or at else data)
                at += take
                self._left -= take
                if self._left == 0:
                    self._chunk_state = _DATA_END
                continue
            end = data.find(b"\n", at)
            if end < 0:
                self._line += data[at:]
                if len(self._line) > MAX_CHUNK_LINE:
                    self._fail(_Failure(UpstreamProtocolError, _UNREADABLE))
                return
            line = bytes(self._line) + data[at:end] if self._line else data[at:end]
            self._line = bytearray()
            at = end + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if state == _DATA_END:
                if line:
                    self._fail(_Failure(UpstreamProtocolError, _UNREADABLE))
                    return
                self._chunk_state = _SIZE
            elif state == _SIZE:
                digits = line.split(b";", 1)[0].strip()
                try:
                    chunk = int(digits, 16)
                except ValueError:
                    chunk = -1
                if chunk < 0 or not digits.isalnum():
                    self._fail(_Failure(UpstreamProtocolError, _UNREADABLE))
                    return
                if chunk:
                    self._chunk_state, self._left = _DATA, chunk
                else:
                    self._chunk_state = _TRAILER
            elif not line:  # _TRAILER: the empty line ends the body
                if at < size:
                    self._reusable = False  # bytes after the body
                self._body_ended = True
                self._settle()
                return

    def _deliver(self, data: bytes) -> None:
        if not data:
            return
        if self._decoder is not None:
            self._inflate(data)
        else:
            self._hold(data)
        if self._held_bytes >= HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def _inflate(self, data: bytes) -> None:
        """Decode what the held bytes leave room for; the rest waits in ``_zpending``."""
        decoder = self._decoder
        if isinstance(decoder, str):  # deflate: a zlib header, or raw deflate data
            if not data:
                return
            wrapped = len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            wbits = zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS
            decoder = self._decoder = zlib.decompressobj(wbits)
        pending = self._zpending + data if self._zpending else data
        try:
            while pending and self._held_bytes < HIGH_WATER:
                out = decoder.decompress(pending, HIGH_WATER)
                pending = decoder.unconsumed_tail
                if not out:
                    break  # (input left over only when the output filled max_length)
                self._hold(out)
                if decoder.eof:
                    pending = b""
            self._zpending = pending
            if self._body_ended and not pending:
                rest = decoder.flush()
                if rest:
                    self._hold(rest)
        except zlib.error:
            self._zpending = b""
            self._fail(_Failure(UpstreamProtocolError, _UNREADABLE))

    def _hold(self, data: bytes) -> None:
        self._held.append(data)
        self._held_bytes += len(data)
        self._wake()

    def _settle(self) -> None:
        """The body's bytes have all arrived (an encoded body's decoder is flushed
        by ``_inflate`` once it has taken them all)."""
        if self._decoder is not None and not isinstance(self._decoder, str):
            self._inflate(b"")
            if self.failure is not None:
                return
        self.phase = _DONE
        self._stop_timer()
        self._wake()

    def _fail(self, failure: _Failure) -> None:
        """The exchange failed (or, idle, the connection is of no more use): the
        connection is closed and whoever waits on it gets ``failure``. After a
        complete body, only its reuse is off."""
        if self.phase == _DONE:
            self._reusable = False
            return
        if self.failure is None:
            self.failure = failure
        self.phase = _BROKEN
        self._stop_timer()
        self._wake()
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.abort()  # (connection_lost follows and frees its place)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _reset(self) -> None:
        self.phase = _IDLE
        self._framing = _NONE
        self._held.clear()
        self._held_bytes = 0
        self._decoder, self._zpending = None, b""
        self._body_ended = False
        self.no_body = False
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    # --- the silence and total timer -------------------------------------------------

    def _arm(self, now: float) -> None:
        at = now + self._read_s
        if self._deadline is not None and self._deadline < at:
            at = self._deadline
        self._timer = self._loop.call_at(at, self._check)

    def _check(self) -> None:
        self._timer = None
        if self.phase not in (_HEAD, _BODY):
            return
        now = self._loop.time()
        if self._deadline is not None and now >= self._deadline:
            self._fail(_Failure(UpstreamTimeout, _SILENT))
        elif self._paused:  # the caller is slow, not the upstream: wait on
            self._arm(now)
        elif now - self._last_io >= self._read_s:
            self._fail(_Failure(UpstreamTimeout, _SILENT))
        else:
            self._arm(self._last_io)

    def _stop_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()


class Pool:
    """All upstream connections: at most ``limit`` open, idle ones kept for
    ``keepalive_s`` (newest reused first)."""

    def __init__(self, limit: int, keepalive_s: float = 30.0) -> None:
        self.limit = limit
        self.keepalive_s = keepalive_s
        self.open = 0
        self._idle: dict[str, list[Connection]] = {}
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._tls: ssl.SSLContext | None = None
        self._closed = False

    async def connect(self, target: _Target, connect_s: float) -> Connection:
        loop = asyncio.get_running_loop()
        while True:
            idle = self._idle.get(target.key)
            now = loop.time()
            while idle:
                conn = idle.pop()
                if conn.usable(now, self.keepalive_s):
                    return conn
                conn.close()
            if self._closed:
                raise UpstreamConnectError("Could not reach the provider.")
            if self.open < self.limit:
                break
            if not self._close_oldest_idle():
                waiter: asyncio.Future[None] = loop.create_future()
                self._waiters.append(waiter)
                try:
                    await waiter
                except BaseException:
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)
                    elif waiter.done() and not waiter.cancelled():
                        self._wake_one()  # woken, then cancelled: the turn passes on
                    raise
        self.open += 1
        conn = Connection(self, target.key)
        try:
            async with asyncio.timeout(connect_s):
                if target.tls:
                    await loop.create_connection(
                        conn.factory, target.host, target.port,
                        ssl=self._context(), server_hostname=target.host,
                    )  # fmt: skip
                else:
                    await loop.create_connection(conn.factory, target.host, target.port)
        except TimeoutError:
            conn.close()
            raise UpstreamTimeout(_SILENT) from None
        except (OSError, ssl.SSLError, ValueError):
            conn.close()
            raise UpstreamConnectError("Could not reach the provider.") from None
        except BaseException:
            conn.close()
            raise
        return conn

    def put(self, conn: Connection) -> None:
        if self._closed:
            conn.close()
            return
        conn.idle_since = asyncio.get_running_loop().time()
        self._idle.setdefault(conn.key, []).append(conn)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self.keepalive_s, self._sweep)
        self._wake_one()

    def lost(self, conn: Connection) -> None:
        """A connection closed (either side): its place is free."""
        if conn.counted:
            conn.counted = False
            self.open -= 1
            idle = self._idle.get(conn.key)
            if idle is not None and conn in idle:
                idle.remove(conn)
            self._wake_one()

    def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in list(self._idle.values()):
            for conn in list(idle):
                conn.close()
        self._idle.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    def _close_oldest_idle(self) -> bool:
        oldest: Connection | None = None
        for idle in self._idle.values():
            if idle and (oldest is None or idle[0].idle_since < oldest.idle_since):
                oldest = idle[0]
        if oldest is None:
            return False
        oldest.close()
        return True

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _sweep(self) -> None:
        self._sweeper = None
        now = asyncio.get_running_loop().time()
        left = 0
        for idle in list(self._idle.values()):
            for conn in list(idle):
                if not conn.usable(now, self.keepalive_s):
                    conn.close()
            left += len(idle)
        if left and not self._closed:
            self._sweeper = asyncio.get_running_loop().call_later(self.keepalive_s / 2, self._sweep)


class Client:
    """Requests to any upstream URL through one ``Pool``."""

    def __init__(self, max_connections: int, user_agent: str, keepalive_s: float = 30.0) -> None:
        self.pool = Pool(max_connections, keepalive_s)
        self._user_agent = user_agent
        self._targets: dict[str, _Target] = {}
        self._names: set[str] = set()

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        connect_s: float,
        read_s: float,
        total_s: float | None,
    ) -> Response:
        target = self._target(url)
        head = self._head(method, target, headers, len(body))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + total_s if total_s is not None else None
        if total_s is not None:
            try:
                async with asyncio.timeout(total_s):
                    conn = await self.pool.connect(target, connect_s)
            except TimeoutError:
                raise UpstreamTimeout(_SILENT) from None
        else:
            conn = await self.pool.connect(target, connect_s)
        conn.no_body = method == "HEAD"
        try:
            return await conn.exchange(head, body, read_s, deadline)
        except BaseException:
            conn.close()
            raise

    def close(self) -> None:
        self.pool.close()

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is None:
            try:
                target = _Target(url)
            except ValueError:
                raise UpstreamConnectError("The provider's URL is not a valid URL.") from None
            if len(self._targets) >= _MAX_TARGETS:
                self._targets.clear()
            self._targets[url] = target
        return target

    def _head(self, method: str, target: _Target, headers: Mapping[str, str], length: int) -> bytes:
        lines = [f"{method} {target.path} HTTP/1.1\r\nHost: {target.host_header}\r\n"]
        given: set[str] = set()
        for name, value in headers.items():
            lower = name.lower()
            if lower in _OWN:
                continue
            if name not in self._names:
                if not _TOKEN.fullmatch(name):
                    raise UpstreamConnectError("A header for the provider has an invalid name.")
                if len(self._names) < 1024:
                    self._names.add(name)
            given.add(lower)
            lines.append(f"{name}: {value}\r\n")
        if "user-agent" not in given:
            lines.append(f"User-Agent: {self._user_agent}\r\n")
        if "accept-encoding" not in given:
            lines.append("Accept-Encoding: gzip, deflate\r\n")
        if target.authorization is not None and "authorization" not in given:
            lines.append(f"Authorization: {target.authorization}\r\n")
        lines.append(f"Content-Length: {length}\r\n\r\n")
        text = "".join(lines)
        # every line ends in the CRLF written here (the first and the last piece hold
        # two): a value with a line break (or a NUL) would make another count
        breaks = len(lines) + 2
        if text.count("\n") != breaks or text.count("\r") != breaks or "\0" in text:
            raise UpstreamConnectError("A header for the provider holds a line break.")
        try:
            return text.encode("latin-1")
        except UnicodeEncodeError:
            raise UpstreamConnectError("A header for the provider is not Latin-1 text.") from None

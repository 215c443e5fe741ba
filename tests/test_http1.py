"""The upstream HTTP/1.1 client against a raw TCP server on 127.0.0.1 that writes
exactly the bytes a test gives it: framings, codings, keep-alive, limits, failures."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from aigateway.errors import UpstreamConnectError, UpstreamProtocolError, UpstreamTimeout
from aigateway.http1 import HIGH_WATER, Client

#: what a server answers to one request: byte pieces, each after a pause (seconds)
Answer = list[tuple[float, bytes]]


@dataclass
class Raw:
    port: int
    answers: list[Answer | Callable[[], Answer]]
    #: each request's head and body as received
    seen: list[tuple[bytes, bytes]] = field(default_factory=list)
    connections: int = 0
    #: close the connection after the answer
    close_after: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat?x=1"


def ok(body: bytes, *headers: str) -> Answer:
    extra = "".join(f"{h}\r\n" for h in headers)
    return [(0, f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body)]


@pytest.fixture
async def raw() -> AsyncIterator[Raw]:
    state = Raw(0, [])

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        try:
            for _ in range(100):
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                state.seen.append((head, body))
                answer = state.answers.pop(0)
                for pause, data in answer() if callable(answer) else answer:
                    if pause:
                        await asyncio.sleep(pause)
                    writer.write(data)
                    await writer.drain()
                if state.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()


async def call(
    client: Client, url: str, headers: dict[str, str] | None = None, body: bytes = b"{}",
    read_s: float = 5, total_s: float | None = None,
) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    resp = await client.request(
        "POST", url, headers or {}, body, connect_s=2, read_s=read_s, total_s=total_s
    )
    try:
        return resp.status, dict(resp.headers), await resp.read()
    finally:
        resp.release()


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    c = Client(10, user_agent="aigateway/test")
    yield c
    c.close()
    await asyncio.sleep(0)  # the closed connections' callbacks


def chunked(*pieces: bytes, trailer: bytes = b"") -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)
    return out + b"0\r\n" + trailer + b"\r\n"


async def test_request_head_body_and_response(raw: Raw, client: Client) -> None:
    raw.answers.append(ok(b'{"a": 1}', "Content-Type: application/json", "X-Two: a", "x-two: b"))
    status, headers, body = await call(client, raw.url, {"authorization": "Bearer k"}, b"[1]")
    assert (status, body) == (200, b'{"a": 1}')
    assert headers["content-type"] == "application/json"
    assert headers["x-two"] == "a, b"  # repeated headers joined, names lower-cased
    head, sent = raw.seen[0]
    assert sent == b"[1]"
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/chat?x=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{raw.port}" in lines
    assert "authorization: Bearer k" in lines
    assert "User-Agent: aigateway/test" in lines
    assert "Accept-Encoding: gzip, deflate" in lines
    assert "Content-Length: 3" in lines


@pytest.mark.parametrize(
    "answer",
    [
        # chunked, with extensions and a trailer
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked(b"hel", b"lo").replace(b"3\r\n", b"3;ext=1\r\n", 1)
        + b"",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked(b"hello", trailer=b"X-T: 1\r\n"),
        # 1xx answers before the real one are skipped
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        # gzip and deflate (zlib-wrapped and raw)
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
        % (len(gzip.compress(b"hello")), gzip.compress(b"hello")),
        b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n%s"
        % (len(zlib.compress(b"hello")), zlib.compress(b"hello")),
        b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked(zlib.compress(b"hello")[2:-4]),
    ],
)
async def test_framings_and_codings(raw: Raw, client: Client, answer: bytes) -> None:
    # every byte in a write of its own: framing split anywhere
    raw.answers.append([(0, answer[i : i + 1]) for i in range(len(answer))])
    raw.answers.append(ok(b"again"))
    assert await call(client, raw.url) == (200, await_headers(answer), b"hello")
    # the connection was reused for the next request: the body ended where it said
    assert (await call(client, raw.url))[2] == b"again"
    assert raw.connections == 1


def await_headers(answer: bytes) -> dict[str, str]:
    """The final response's headers as the client reports them."""
    final = answer[answer.rindex(b"HTTP/1.1 2") :]
    head = final.split(b"\r\n\r\n", 1)[0].decode()
    out: dict[str, str] = {}
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        out[name.lower()] = value.strip()
    return out


async def test_a_body_to_the_end_of_the_connection_is_read_and_not_reused(
    raw: Raw, client: Client
) -> None:
    raw.close_after = True
    raw.answers += [[(0, b"HTTP/1.1 200 OK\r\n\r\npart one, "), (0.05, b"part two")]]
    raw.answers += [ok(b"next")]
    assert (await call(client, raw.url))[2] == b"part one, part two"
    assert (await call(client, raw.url))[2] == b"next"
    assert raw.connections == 2


@pytest.mark.parametrize("header", ["Connection: close", None])
async def test_connection_close_and_http10_are_not_reused(
    raw: Raw, client: Client, header: str | None
) -> None:
    http10: Answer = [(0, b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\none")]
    first = ok(b"one", header) if header else http10
    raw.answers += [first, ok(b"two")]
    raw.close_after = False
    assert (await call(client, raw.url))[2] == b"one"
    assert (await call(client, raw.url))[2] == b"two"
    assert raw.connections == 2


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # then closed
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello and more",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nh",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nh",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 1\r\n\r\nh",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\n folded: header\r\nContent-Length: 1\r\n\r\nh",
        b"HTTP/1.1 200 OK\r\nBad Name : x\r\nContent-Length: 1\r\n\r\nh",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 1\r\n\r\nh",
        b"SPDY/3 200 OK\r\nContent-Length: 1\r\n\r\nh",
        b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000 + b"\r\n\r\n",
    ],
)
async def test_broken_answers_are_protocol_errors(raw: Raw, client: Client, answer: bytes) -> None:
    raw.close_after = True
    raw.answers.append([(0, answer)])
    with pytest.raises(UpstreamProtocolError) as caught:
        await call(client, raw.url)
    assert str(raw.port) not in str(caught.value)
    await asyncio.sleep(0.01)
    assert client.pool.open == 0  # the connection was closed, its place freed


async def test_nothing_listening_is_a_connect_error(client: Client) -> None:
    with pytest.raises(UpstreamConnectError):
        await call(client, "http://127.0.0.1:9/")
    assert client.pool.open == 0


async def test_a_closed_connection_before_any_answer_is_a_connect_error(
    raw: Raw, client: Client
) -> None:
    raw.close_after = True
    raw.answers.append([])  # read the request, answer nothing, close
    with pytest.raises(UpstreamConnectError):
        await call(client, raw.url)


async def test_silence_is_a_timeout_and_steady_bytes_are_not(raw: Raw, client: Client) -> None:
    raw.answers.append([(0.5, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nh")])
    with pytest.raises(UpstreamTimeout):
        await call(client, raw.url, read_s=0.2)
    # a body arriving every 0.1 s for 0.6 s, with read_s 0.25: never silent that long
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    raw.answers.append([(0, head)] + [(0.1, b"1\r\nx\r\n")] * 6 + [(0, b"0\r\n\r\n")])
    assert (await call(client, raw.url, read_s=0.25))[2] == b"x" * 6
    # total_s caps the exchange however steady it is
    raw.answers.append([(0, head)] + [(0.1, b"1\r\nx\r\n")] * 6 + [(0, b"0\r\n\r\n")])
    with pytest.raises(UpstreamTimeout):
        await call(client, raw.url, read_s=0.25, total_s=0.3)


async def test_a_slow_reader_pauses_the_socket_and_is_not_timed_out(raw: Raw) -> None:
    client = Client(10, user_agent="t")
    size = 4 * HIGH_WATER
    raw.answers.append(ok(b"x" * size))
    resp = await client.request("POST", raw.url, {}, b"", connect_s=2, read_s=0.2, total_s=None)
    got = 0
    held = []
    for _ in range(1000):
        await asyncio.sleep(0.05 if got == 0 else 0)  # first: let the socket fill
        data = await resp.read_chunk()
        if not data:
            break
        held.append(len(data))
        got += len(data)
    resp.release()
    client.close()
    assert got == size
    # what was held at once stayed near the high-water mark (one socket read past it)
    assert max(held) <= HIGH_WATER + 256 * 1024


async def test_a_body_left_unread_closes_the_connection(raw: Raw, client: Client) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
    raw.answers += [[(0, head + b"12345"), (0.2, b"67890")], ok(b"two")]
    resp = await client.request("POST", raw.url, {}, b"", connect_s=2, read_s=5, total_s=None)
    assert await resp.read_chunk() == b"12345"
    assert not resp.at_eof()
    resp.release()  # the rest unread
    assert (await call(client, raw.url))[2] == b"two"
    assert raw.connections == 2


async def test_the_pool_limit_holds_and_waiters_get_freed_places(raw: Raw) -> None:
    client = Client(2, user_agent="t")
    raw.answers += [[(0.1, ok(b"%d" % i)[0][1])] for i in range(6)]
    results = await asyncio.gather(*(call(client, raw.url) for _ in range(6)))
    assert sorted(r[2] for r in results) == [b"0", b"1", b"2", b"3", b"4", b"5"]
    assert raw.connections == 2
    assert client.pool.open == 2
    client.close()


async def test_a_cancelled_caller_frees_its_connection(raw: Raw, client: Client) -> None:
    raw.answers += [[(5, b"")], ok(b"two")]
    task = asyncio.ensure_future(call(client, raw.url))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.01)
    assert client.pool.open == 0
    assert (await call(client, raw.url))[2] == b"two"


@pytest.mark.parametrize(
    "headers",
    [{"x-a": "v\r\nInjected: 1"}, {"x-a": "v\nx"}, {"x-a": "v\0"}, {"bad name": "v"},
     {"x-a\r\nb": "v"}, {"x-a": "snowman ☃"}],
)  # fmt: skip
async def test_headers_that_would_break_the_request_are_refused(
    raw: Raw, client: Client, headers: dict[str, str]
) -> None:
    with pytest.raises(UpstreamConnectError) as caught:
        await call(client, raw.url, headers)
    assert "Injected" not in str(caught.value) and "\n" not in str(caught.value)
    assert raw.seen == []


async def test_callers_own_user_agent_host_and_length_are_handled(raw: Raw, client: Client) -> None:
    raw.answers.append(ok(b"x"))
    given = {"User-Agent": "app/1", "Host": "evil", "Content-Length": "99", "X-K": "1"}
    await call(client, raw.url, given, b"abc")
    lines = raw.seen[0][0].decode().split("\r\n")
    assert "User-Agent: app/1" in lines and "User-Agent: aigateway/test" not in lines
    assert f"Host: 127.0.0.1:{raw.port}" in lines and "Host: evil" not in lines
    assert "Content-Length: 3" in lines and "Content-Length: 99" not in lines


async def test_credentials_in_the_url_become_basic_auth(raw: Raw, client: Client) -> None:
    raw.answers.append(ok(b"x"))
    await call(client, f"http://us%40er:p%3Ass@127.0.0.1:{raw.port}/")
    assert b"Authorization: Basic dXNAZXI6cDpzcw==\r\n" in raw.seen[0][0]  # us@er:p:ss


async def test_idle_connections_expire(raw: Raw) -> None:
    client = Client(10, user_agent="t", keepalive_s=0.1)
    raw.answers += [ok(b"one"), ok(b"two")]
    await call(client, raw.url)
    await asyncio.sleep(0.25)  # the sweep closed it
    assert client.pool.open == 0
    await call(client, raw.url)
    assert raw.connections == 2
    client.close()


async def test_a_connection_closed_by_the_server_while_idle_is_not_used(raw: Raw) -> None:
    client = Client(10, user_agent="t")
    raw.answers += [ok(b"one", "X: 1"), ok(b"two")]
    raw.close_after = True  # closes after each answer, without saying so
    await call(client, raw.url)
    await asyncio.sleep(0.05)  # its FIN arrives while idle
    assert (await call(client, raw.url))[2] == b"two"
    client.close()


async def test_a_small_compressed_body_is_inflated_a_bounded_piece_at_a_time(
    raw: Raw, client: Client
) -> None:
    """12 x 256 KiB of text in a few KiB of gzip: decoded as the caller reads, never
    more than the high-water mark at once, all of it in the end (then reused)."""
    text = b"hello world, " * (12 * HIGH_WATER // 13)
    packed = gzip.compress(text)
    assert len(packed) < HIGH_WATER // 10
    raw.answers.append(ok(packed, "Content-Encoding: gzip"))
    raw.answers.append(ok(b"two"))
    resp = await client.request("POST", raw.url, {}, b"", connect_s=2, read_s=5, total_s=None)
    pieces = []
    for _ in range(1000):
        data = await resp.read_chunk()
        if not data:
            break
        pieces.append(data)
    assert resp.at_eof()
    resp.release()
    assert b"".join(pieces) == text
    assert len(pieces) > 1 and max(map(len, pieces)) <= HIGH_WATER
    assert (await call(client, raw.url))[2] == b"two"
    assert raw.connections == 1

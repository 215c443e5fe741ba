"""Bad input always gets a clear 4xx in the OpenAI error shape, never a 500."""

from __future__ import annotations

import gzip
import io
import json

import aiohttp
import pytest

from tests.conftest import KEY, GatewayFactory

AUTH = {"Authorization": f"Bearer {KEY}"}
GOOD = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def deep(n: int) -> bytes:
    return b'{"model":"gpt-4o","messages":' + b"[" * n + b"]" * n + b"}"


CASES = [
    ("malformed JSON", b'{"model": ', {}, 400, "not valid JSON"),
    ("bad UTF-8", b'{"model": "\xff\xfe"}', {}, 400, "UTF-8"),
    ("deep nesting", deep(100_000), {}, 400, "nested deeper"),
    ("moderate nesting", deep(65), {}, 400, "nested deeper"),
    ("empty body", b"", {}, 400, "empty"),
    ("not an object", b"[1, 2]", {}, 400, "JSON object"),
    ("NaN", b'{"model": "gpt-4o", "messages": [], "temperature": NaN}', {}, 400, "NaN"),
    ("Infinity", b'{"model": "gpt-4o", "temperature": -Infinity}', {}, 400, "Infinity"),
    ("missing messages", b'{"model": "gpt-4o"}', {}, 400, "messages"),
    ("no messages", b'{"model": "gpt-4o", "messages": []}', {}, 400, "messages"),
    ("missing model", b'{"messages": [{"role": "user", "content": "x"}]}', {}, 400, "model"),
    ("model not a string", b'{"model": 5, "messages": [{"role": "user"}]}', {}, 400, "model"),
    (
        "CRLF in model",
        json.dumps({**GOOD, "model": "gpt-4o\r\nX-Evil: 1"}).encode(),
        {},
        400,
        "model",
    ),
    ("NUL in model", json.dumps({**GOOD, "model": "a\u0000b"}).encode(), {}, 400, "model"),
    ("bad role", json.dumps({**GOOD, "messages": [{"role": "x"}]}).encode(), {}, 400, "role"),
    ("stream not bool", json.dumps({**GOOD, "stream": "yes"}).encode(), {}, 400, "stream"),
    ("max_tokens zero", json.dumps({**GOOD, "max_tokens": 0}).encode(), {}, 400, "max_tokens"),
    (
        "wrong media type",
        json.dumps(GOOD).encode(),
        {"Content-Type": "application/xml"},
        415,
        "application/json",
    ),
    (
        "multipart",
        json.dumps(GOOD).encode(),
        {"Content-Type": "multipart/form-data; b=x"},
        415,
        "application/json",
    ),
    ("over the size limit", b'{"model": "' + b"x" * 5_000_000 + b'"}', {}, 413, "limit"),
    (
        "gzip bomb",
        gzip.compress(b'{"model": "' + b"x" * 20_000_000 + b'"}'),
        {"Content-Encoding": "gzip"},
        413,
        "limit",
    ),
]


@pytest.mark.parametrize(
    ("name", "body", "headers", "status", "says"), CASES, ids=[c[0] for c in CASES]
)
async def test_bad_body(
    make_gateway: GatewayFactory,
    name: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    says: str,
) -> None:
    gw = await make_gateway()
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            gw.url + "/chat/completions",
            data=io.BytesIO(body),
            headers={"Content-Type": "application/json", **AUTH, **headers},
        ) as resp,
    ):
        payload = await resp.json()
        assert resp.status == status, payload
        assert resp.headers["content-type"].startswith("application/json")
        assert "x-request-id" in resp.headers
    err = payload["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert says in err["message"] or says == err["param"], err
    assert gw.upstream.calls == 0


async def test_gzip_body_within_limit_is_accepted(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            gw.url + "/chat/completions",
            data=gzip.compress(json.dumps(GOOD).encode()),
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip", **AUTH},
        ) as resp,
    ):
        assert resp.status == 200


async def test_curl_default_media_type_is_accepted(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            gw.url + "/chat/completions",
            data=json.dumps(GOOD),
            headers={"Content-Type": "application/x-www-form-urlencoded", **AUTH},
        ) as resp,
    ):
        assert resp.status == 200


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/nope", 404),
        ("GET", "/v1/chat/completions", 405),
        ("DELETE", "/v1/models", 405),
        ("POST", "/", 404),
    ],
)
async def test_unknown_paths_and_methods(
    make_gateway: GatewayFactory, method: str, path: str, status: int
) -> None:
    gw = await make_gateway()
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, gw.root.rstrip("/") + path, headers=AUTH) as resp,
    ):
        assert resp.status == status
        payload = await resp.json()
        assert payload["error"]["type"] == "invalid_request_error"
        assert "x-request-id" in resp.headers


async def test_oversized_header_is_refused_without_logging_it(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    secret_ish = "aig-" + "Q" * 9000
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            gw.url + "/chat/completions",
            json=GOOD,
            headers={"Authorization": f"Bearer {secret_ish}"},
        ) as resp,
    ):
        assert resp.status in (400, 431)
    assert "QQQQQQQQ" not in gw.log.getvalue()


async def test_embeddings_bad_input(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    async with aiohttp.ClientSession() as s:
        for body in [
            {"model": "text-embedding-3-small"},
            {"model": "text-embedding-3-small", "input": []},
            {"model": "text-embedding-3-small", "input": "x", "encoding_format": "hex"},
        ]:
            async with s.post(gw.url + "/embeddings", json=body, headers=AUTH) as resp:
                assert resp.status == 400
                assert (await resp.json())["error"]["code"] == "invalid_request"


@pytest.mark.parametrize(
    "raw",
    [
        # the caller goes away in the middle of the body
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + KEY.encode() + b'\r\nContent-Length: 100\r\n\r\n{"model":',
        # a broken chunked encoding
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + KEY.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\n{}\r\n0\r\n\r\n",
    ],
    ids=["truncated body", "bad chunked encoding"],
)
async def test_broken_bodies_never_reach_an_unhandled_error(
    make_gateway: GatewayFactory, raw: bytes
) -> None:
    import asyncio

    gw = await make_gateway()
    assert gw.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.server.port)
    writer.write(raw)
    await writer.drain()
    writer.write_eof()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()
    assert not answer or answer.startswith((b"HTTP/1.1 400", b"HTTP/1.0 400"))
    assert b" 500 " not in answer
    assert "unhandled error" not in gw.log.getvalue()
    async with (
        aiohttp.ClientSession() as s,
        s.post(gw.url + "/chat/completions", json=GOOD, headers=AUTH) as resp,
    ):
        assert resp.status == 200

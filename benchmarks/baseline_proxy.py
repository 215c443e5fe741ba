"""The baseline: the thinnest aiohttp pass-through proxy, the best this stack can do.

It forwards the request body to ``UPSTREAM + path`` over a pooled session and
relays the answer: JSON whole, SSE chunk by chunk. No auth, no parsing, no logs.

With ``http1`` after the URL it forwards through the gateway's own HTTP/1.1
client (``aigateway.http1``) instead of aiohttp's: aiohttp's server with the
gateway's client and nothing in between, the floor of the gateway's own stack
(``run.py --baseline-client http1``).

    python benchmarks/baseline_proxy.py PORT UPSTREAM_BASE_URL [http1]
"""

from __future__ import annotations

import sys
from typing import Any

import aiohttp
from aiohttp import web

SESSION = web.AppKey("session", aiohttp.ClientSession)
LEAN: web.AppKey[Any] = web.AppKey("lean")


class CoalescedStreamResponse(web.StreamResponse):
    """Headers leave with the first body write (the gateway does the same)."""

    _send_headers_immediately = False


async def forward_http1(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    upstream = request.app["upstream"] + request.path
    up = await request.app[LEAN].request(
        "POST", upstream, {"content-type": "application/json"}, body,
        connect_s=10, read_s=300, total_s=None,
    )  # fmt: skip
    try:
        if up.headers.get("content-type", "").startswith("text/event-stream"):
            resp = CoalescedStreamResponse(
                status=up.status, headers={"content-type": "text/event-stream"}
            )
            await resp.prepare(request)
            while data := await up.read_chunk():
                await resp.write(data)
            await resp.write_eof()
            return resp
        return web.Response(status=up.status, body=await up.read(), content_type="application/json")
    finally:
        up.release()


async def forward(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    upstream = request.app["upstream"] + request.path
    async with request.app[SESSION].post(
        upstream, data=body, headers={"content-type": "application/json"}
    ) as up:
        if up.headers.get("content-type", "").startswith("text/event-stream"):
            resp = CoalescedStreamResponse(
                status=up.status, headers={"content-type": "text/event-stream"}
            )
            await resp.prepare(request)
            async for data in up.content.iter_any():
                await resp.write(data)
            await resp.write_eof()
            return resp
        return web.Response(status=up.status, body=await up.read(), content_type="application/json")


async def session_ctx(app: web.Application):
    app[SESSION] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000))
    if app["client"] == "http1":
        from aigateway.http1 import Client

        app[LEAN] = Client(1000, user_agent="baseline")
    yield
    await app[SESSION].close()
    if LEAN in app:
        app[LEAN].close()


def main() -> None:
    port, upstream = int(sys.argv[1]), sys.argv[2].rstrip("/")
    client = sys.argv[3] if len(sys.argv) > 3 else "aiohttp"
    app = web.Application()
    app["upstream"] = upstream
    app["client"] = client
    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/{tail:.*}", forward_http1 if client == "http1" else forward)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()

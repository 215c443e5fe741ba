"""The baseline: the thinnest aiohttp pass-through proxy, the best this stack can do.

It forwards the request body to ``UPSTREAM + path`` over a pooled session and
relays the answer: JSON whole, SSE chunk by chunk. No auth, no parsing, no logs.

    python benchmarks/baseline_proxy.py PORT UPSTREAM_BASE_URL
"""

from __future__ import annotations

import sys

import aiohttp
from aiohttp import web

SESSION = web.AppKey("session", aiohttp.ClientSession)


class CoalescedStreamResponse(web.StreamResponse):
    """Headers leave with the first body write (the gateway does the same)."""

    _send_headers_immediately = False


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
    yield
    await app[SESSION].close()


def main() -> None:
    port, upstream = int(sys.argv[1]), sys.argv[2].rstrip("/")
    app = web.Application()
    app["upstream"] = upstream
    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/{tail:.*}", forward)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()

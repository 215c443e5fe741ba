"""The only module that talks to providers over the network.

``HttpTransport`` sends an adapter's ``UpstreamRequest`` through the gateway's
HTTP/1.1 client (``http1``: one pool of keep-alive connections for all upstreams)
with the provider's timeouts. Every transport failure arrives as a gateway error
whose message holds no header (headers carry credentials), URL or body.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from aigateway import __version__
from aigateway.config.model import Timeouts
from aigateway.http1 import MAX_RESPONSE_BYTES, Client
from aigateway.providers.base import UpstreamRequest

#: largest error body read (the rest is discarded)
MAX_ERROR_BYTES = 64 * 1024

__all__ = [
    "MAX_ERROR_BYTES",
    "MAX_RESPONSE_BYTES",
    "HttpTransport",
    "Requester",
    "Transport",
    "UpstreamResponse",
    "new_client",
]


class UpstreamResponse(Protocol):
    status: int
    headers: Mapping[str, str]

    async def read(self, limit: int = MAX_RESPONSE_BYTES) -> bytes: ...

    async def read_chunk(self) -> bytes:
        """The next bytes of the body as they arrive; b"" at the end."""
        ...

    def at_eof(self) -> bool:
        """The whole body has been read (the next ``read_chunk`` would give b"")."""
        ...

    def release(self) -> None: ...


class Transport(Protocol):
    async def open(self, req: UpstreamRequest, timeouts: Timeouts) -> UpstreamResponse: ...


def new_client(max_connections: int) -> Client:
    """The client for all upstream calls; ``close()`` it at shutdown."""
    # who is calling, as upstreams like to know (a provider's own headers may replace it)
    return Client(max_connections, user_agent=f"aigateway/{__version__}")


class Requester(Protocol):
    """What ``HttpTransport`` needs of a client (``http1.Client``)."""

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
    ) -> UpstreamResponse: ...


class HttpTransport:
    def __init__(self, client: Requester) -> None:
        self._client = client

    async def open(self, req: UpstreamRequest, timeouts: Timeouts) -> UpstreamResponse:
        return await self._client.request(
            req.method,
            req.url,
            req.headers,
            req.body,
            connect_s=timeouts.connect_s,
            read_s=timeouts.read_s,
            total_s=timeouts.total_s,
        )

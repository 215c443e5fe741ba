"""The only module that talks to providers over the network.

``HttpTransport`` sends an adapter's ``UpstreamRequest`` through one shared
aiohttp session (pooled, keep-alive connections) and maps every transport failure
to the gateway's errors, without ever putting a request's headers (which carry
credentials) into a message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Protocol

import aiohttp

from aigateway import __version__
from aigateway.config.model import Timeouts
from aigateway.errors import (
    GatewayError,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from aigateway.providers.base import UpstreamRequest

#: largest non-streamed upstream body the gateway will hold in memory
MAX_RESPONSE_BYTES = 256 * 1024 * 1024
#: largest error body read (the rest is discarded)
MAX_ERROR_BYTES = 64 * 1024
#: timeout settings kept converted (a config has one per provider)
_MAX_TIMEOUTS = 1024


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


def client_timeout(t: Timeouts) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=t.total_s, sock_connect=t.connect_s, sock_read=t.read_s)


def new_session(max_connections: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=max_connections, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=30
    )
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=True,
        # who is calling, as upstreams like to know (a provider's own headers: may
        # replace it); set here rather than skipped, which is aiohttp's slow path
        headers={"User-Agent": f"aigateway/{__version__}"},
        raise_for_status=False,
    )


class HttpTransport:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session
        #: by the settings' identity (hashing a pydantic model costs more than a
        #: request's other lookups); the entry holds the settings, so the id stays theirs
        self._timeouts: dict[int, tuple[Timeouts, aiohttp.ClientTimeout]] = {}

    async def open(self, req: UpstreamRequest, timeouts: Timeouts) -> UpstreamResponse:
        entry = self._timeouts.get(id(timeouts))
        if entry is None or entry[0] is not timeouts:
            if len(self._timeouts) >= _MAX_TIMEOUTS:
                self._timeouts.clear()  # reloads make new settings objects
            entry = self._timeouts[id(timeouts)] = (timeouts, client_timeout(timeouts))
        timeout = entry[1]
        try:
            resp = await self._session.request(
                req.method, req.url, data=req.body, headers=dict(req.headers), timeout=timeout
            )
        except BaseException as exc:
            raise _map(exc, before_response=True) from None
        return _HttpResponse(resp)


class _HttpResponse:
    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers

    async def read(self, limit: int = MAX_RESPONSE_BYTES) -> bytes:
        parts: list[bytes] = []
        size = 0
        try:
            async for data in self._resp.content.iter_any():
                size += len(data)
                if size > limit:
                    raise UpstreamProtocolError(
                        f"The provider's response is larger than {limit} bytes."
                    )
                parts.append(data)
        except GatewayError:
            raise
        except BaseException as exc:
            raise _map(exc, before_response=False) from None
        return b"".join(parts)

    async def read_chunk(self) -> bytes:
        try:
            return await self._resp.content.readany()
        except BaseException as exc:
            raise _map(exc, before_response=False) from None

    def at_eof(self) -> bool:
        return self._resp.content.at_eof()

    def release(self) -> None:
        self._resp.release()


def _map(exc: BaseException, *, before_response: bool) -> BaseException:
    """Transport exception → gateway error. Never uses ``repr`` (it carries headers).

    A transport exception that becomes a gateway error loses its traceback: the
    client keeps a failed read's exception (to raise it again), and the frames of
    that traceback, this module's among them, hold the response that holds it: a
    reference cycle per failed request, each left to the cyclic garbage
    collector. (Anything else is raised again as it is, traceback and all.)"""
    mapped = _mapped(exc, before_response=before_response)
    if mapped is not exc:
        exc.__traceback__ = None
    return mapped


def _mapped(exc: BaseException, *, before_response: bool) -> BaseException:
    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
        return exc
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamTimeout("The provider did not answer in time.")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamProtocolError("The provider's connection broke during the response.")
    if isinstance(exc, aiohttp.ClientConnectionError | OSError):
        if before_response:
            return UpstreamConnectError("Could not reach the provider.")
        return UpstreamProtocolError("The provider's connection broke during the response.")
    if isinstance(exc, aiohttp.ClientError):
        return UpstreamProtocolError("The provider's answer could not be read.")
    return exc

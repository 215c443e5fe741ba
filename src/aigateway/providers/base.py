"""The adapter interface. Adapters are pure: no sockets, no clocks, no aiohttp.

An adapter turns a caller's (OpenAI-shaped) request into an ``UpstreamRequest``
and the provider's bytes back into OpenAI-shaped responses and chunks plus a
normalized ``Usage``. Translation is idempotent: the same body may be translated
again for the next target after a failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aigateway.errors import UpstreamStatusError
from aigateway.wire import Usage


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    stream: bool = False


@dataclass(slots=True)
class Chunk:
    """One OpenAI ``chat.completion.chunk``; ``raw`` is its JSON when unchanged."""

    data: dict[str, Any]
    raw: bytes | None = None


@dataclass(slots=True)
class Parsed:
    """A whole (non-streamed) response in OpenAI shape."""

    body: dict[str, Any]
    usage: Usage | None
    #: the response JSON when the body was not changed, so it is not re-encoded
    raw: bytes | None = None
    served_model: str | None = None


@dataclass(slots=True)
class StreamState:
    usage: Usage | None = None
    served_model: str | None = None
    finished: bool = False
    #: characters of text produced so far, for estimating usage when none arrives
    output_chars: int = 0


class StreamDecoder(Protocol):
    state: StreamState

    def feed(self, data: bytes) -> list[Chunk]:
        """Bytes as they arrive → the chunks to send to the caller."""
        ...

    def end(self) -> list[Chunk]:
        """The upstream closed. Raises ``UpstreamProtocolError`` if it stopped early."""
        ...


class ProviderAdapter(Protocol):
    def chat_request(
        self, body: Mapping[str, Any], model: str, *, stream: bool, api_key: str | None
    ) -> UpstreamRequest: ...

    def parse_chat(self, body: bytes) -> Parsed: ...

    def stream_decoder(self, *, client_wants_usage: bool) -> StreamDecoder: ...

    def embeddings_request(
        self, body: Mapping[str, Any], model: str, *, api_key: str | None
    ) -> UpstreamRequest: ...

    def parse_embeddings(self, body: bytes) -> Parsed: ...

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamStatusError:
        """A non-2xx answer → the error the caller sees (no secret in it)."""
        ...

"""Adapters that can pass an Anthropic Messages request through unchanged.

Apart from ``base`` because it is checked with ``isinstance`` at run time, which
the compiled build (setup.py) cannot do for a protocol defined in a compiled module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from aigateway.providers.base import Parsed, StreamDecoder, UpstreamRequest


@runtime_checkable
class NativeMessages(Protocol):
    """An adapter that can pass an Anthropic Messages request through unchanged."""

    def messages_request(
        self,
        body: Mapping[str, Any],
        model: str,
        *,
        stream: bool,
        api_key: str | None,
        caller_headers: Mapping[str, str],
    ) -> UpstreamRequest: ...

    def parse_messages(self, body: bytes) -> Parsed: ...

    def messages_stream_decoder(self) -> StreamDecoder: ...

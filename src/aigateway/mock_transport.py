"""Serves the built-in ``mock`` provider in-process, with its configured timing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from aigateway.config.model import Timeouts
from aigateway.errors import UpstreamTimeout
from aigateway.providers.base import UpstreamRequest
from aigateway.providers.mock import MockEngine, MockPlan
from aigateway.upstream import MAX_RESPONSE_BYTES, UpstreamResponse


class MockTransport:
    def __init__(self, engine: MockEngine) -> None:
        self._engine = engine

    async def open(self, req: UpstreamRequest, timeouts: Timeouts) -> UpstreamResponse:
        plan = self._engine.plan(req, now=int(time.time()))
        if plan.latency_s:
            if plan.latency_s > timeouts.read_s:
                await asyncio.sleep(timeouts.read_s)
                raise UpstreamTimeout("The provider did not answer in time.")
            await asyncio.sleep(plan.latency_s)
        return _MockResponse(plan)


class _MockResponse:
    def __init__(self, plan: MockPlan) -> None:
        self._plan = plan
        self._events = plan.events or [plan.body]
        self._next = 0
        self.status = plan.status
        self.headers: Mapping[str, str] = plan.headers

    async def read(self, limit: int = MAX_RESPONSE_BYTES) -> bytes:
        return self._plan.body[:limit]

    async def read_chunk(self) -> bytes:
        if self._next >= len(self._events):
            return b""
        if self._plan.chunk_delay_s:
            await asyncio.sleep(self._plan.chunk_delay_s)
        self._next += 1
        return self._events[self._next - 1]

    def at_eof(self) -> bool:
        return self._next >= len(self._events)

    def release(self) -> None:
        pass

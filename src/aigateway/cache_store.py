"""Where cached answers live: this process (LRU) or Redis (shared by replicas).

Entries are opaque bytes under a hex key, with a time to live. A Redis failure
is a miss (counted); the request goes upstream as if nothing were cached.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from aigateway.config.model import CacheConfig, StateConfig
from aigateway.metrics import Metrics
from aigateway.semantic_store import MemorySemantic, RedisSemantic, SemanticStore


class CacheStore(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def close(self) -> None: ...


class MemoryCache:
    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max = max_entries
        self._clock = clock

    async def get(self, key: str) -> bytes | None:
        found = self._entries.get(key)
        if found is None:
            return None
        if found[0] <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return found[1]

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        self._entries[key] = (self._clock() + ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def close(self) -> None:
        self._entries.clear()


def redis_client(url: str, timeout_s: float) -> Any:
    """One client (one bounded pool) for the exact and the semantic cache."""
    import redis.asyncio as aioredis

    return aioredis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)


class RedisCache:
    def __init__(self, client: Any, *, prefix: str, metrics: Metrics) -> None:
        self._redis = client
        self._tag = "{" + prefix + "}:cache:"
        self._metrics = metrics

    async def get(self, key: str) -> bytes | None:
        from redis.exceptions import RedisError

        try:
            value = await self._redis.get(self._tag + key)
        except (RedisError, OSError):
            self._metrics.state_errors.inc(("cache_get", "miss"))
            return None
        return value if isinstance(value, bytes) else None

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        from redis.exceptions import RedisError

        try:
            await self._redis.set(self._tag + key, value, px=max(1, int(ttl_s * 1000)))
        except (RedisError, OSError):
            self._metrics.state_errors.inc(("cache_put", "skipped"))

    async def close(self) -> None:
        await self._redis.aclose()


def open_cache(
    config: CacheConfig, state: StateConfig, metrics: Metrics
) -> tuple[CacheStore, SemanticStore]:
    """The exact cache's store and the semantic cache's, on one Redis client."""
    if config.backend == "redis" and state.url is not None:
        client = redis_client(state.url.get_secret_value(), state.timeout_s)
        return (
            RedisCache(client, prefix=state.key_prefix, metrics=metrics),
            RedisSemantic(client, prefix=state.key_prefix, metrics=metrics),
        )
    return MemoryCache(config.max_entries), MemorySemantic(config.max_entries)

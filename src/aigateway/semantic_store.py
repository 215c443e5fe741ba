"""Where the semantic cache's vectors live: this process, or Redis (shared by
replicas). Each entry is a unit vector under the key of a cached answer (which
lives in the ``CacheStore``), in a partition (one project, route, conversation
so far and parameters); a lookup compares the query with the partition's live
entries and returns the most similar, with its cosine similarity.

Bounds: at most ``max_entries`` per partition (the oldest go first), and in
memory ``cache.max_entries`` in all (the least recently used partition goes
first). A Redis failure is a miss (counted), as for the exact cache.
"""

from __future__ import annotations

import binascii
import math
import sys
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from aigateway.metrics import Metrics

#: a unit vector: float32 in the machine's byte order, packed (4 bytes a dimension).
#: Bytes, not arrays: they join into a partition's matrix and go to Redis as they
#: are, and SimSIMD reads them in place (its import costs ~0.7 MiB of RSS, numpy's ~10)
Vector = bytes


def _kernels() -> Any:
    """SimSIMD, typed loosely: its stubs are written in numpy's types."""
    import simsimd

    return simsimd


def unit(values: list[Any] | str) -> Vector | None:
    """A provider's embedding (numbers, or little-endian float32 in base64) as a
    float32 unit vector; None when it is empty, zero, not finite or not a vector."""
    try:
        if isinstance(values, str):
            # checked in C (b64decode's validate=True is a regular expression first)
            packed = binascii.a2b_base64(values, strict_mode=True)
            if len(packed) % 4:
                return None
            if sys.byteorder == "big":
                swapped = array("f", packed)
                swapped.byteswap()
                packed = swapped.tobytes()
        else:
            packed = array("f", values).tobytes()  # past float32's range: inf
    # bad base64 (binascii.Error), text, nested lists; an integer past any float
    except (ValueError, TypeError, OverflowError):
        return None
    if not packed:
        return None
    kernels = _kernels()
    vector = memoryview(packed).cast("f")
    square = float(kernels.dot(vector, vector))
    if not square or not math.isfinite(square):  # zero, NaN, infinite
        return None
    return bytes(kernels.wsum(vector, vector, alpha=1 / math.sqrt(square), beta=0.0))


def dimensions(vector: Vector) -> int:
    return len(vector) // 4


def _best(keys: list[str], matrix: bytes, query: Vector) -> tuple[str, float] | None:
    """The key of the row most similar to ``query`` (unit vectors: the dot product is
    the cosine), and that similarity; None when the sizes differ."""
    size = dimensions(query)
    if not keys or not size or len(matrix) != len(keys) * len(query):
        return None
    rows = memoryview(matrix).cast("f", (len(keys), size))
    found = _kernels().cdist(memoryview(query).cast("f", (1, size)), rows, metric="dot")
    scores = cast("list[float]", memoryview(found).tolist()[0])  # float64, one row
    top = max(scores)
    return keys[scores.index(top)], top


class SemanticStore(Protocol):
    async def nearest(self, partition: str, query: Vector) -> tuple[str, float] | None: ...

    async def add(
        self, partition: str, key: str, vector: Vector, ttl_s: float, max_entries: int
    ) -> None: ...

    async def close(self) -> None: ...


@dataclass
class _Partition:
    #: entry key → (expires at, unit vector), oldest first. Once in a matrix, an
    #: entry's vector is a view of its row there: each vector is held once, not
    #: once by its entry and again by the matrix
    entries: OrderedDict[str, tuple[float, Vector | memoryview]] = field(
        default_factory=OrderedDict
    )
    #: the earliest expiry among the entries (nothing to drop before then)
    next_expiry: float = math.inf
    #: the entries' keys and vectors as one matrix, built at the first lookup after
    #: a change (not per lookup: joining copies every vector)
    keys: list[str] = field(default_factory=list)
    matrix: bytes | None = None

    def changed(self) -> None:
        self.matrix = None

    def build(self) -> bytes:
        """The matrix, its rows the entries in order; the entries then view their
        rows, so the previous matrix (or a vector's own bytes) is freed."""
        matrix = b"".join([vector for _, vector in self.entries.values()])
        view = memoryview(matrix)
        at = 0
        for key, (ends, vector) in list(self.entries.items()):
            size = len(vector)
            self.entries[key] = (ends, view[at : at + size])
            at += size
        self.keys = list(self.entries)
        self.matrix = matrix
        return matrix


class MemorySemantic:
    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._parts: OrderedDict[str, _Partition] = OrderedDict()
        self._max = max_entries
        self._count = 0
        self._clock = clock

    async def nearest(self, partition: str, query: Vector) -> tuple[str, float] | None:
        part = self._parts.get(partition)
        if part is None:
            return None
        self._parts.move_to_end(partition)
        now = self._clock()
        if now >= part.next_expiry:
            for key in [k for k, (ends, _) in part.entries.items() if ends <= now]:
                del part.entries[key]
                self._count -= 1
            part.next_expiry = min((ends for ends, _ in part.entries.values()), default=math.inf)
            part.changed()
        if not part.entries:
            del self._parts[partition]
            return None
        matrix = part.build() if part.matrix is None else part.matrix
        return _best(part.keys, matrix, query)

    async def add(
        self, partition: str, key: str, vector: Vector, ttl_s: float, max_entries: int
    ) -> None:
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = _Partition()
        self._parts.move_to_end(partition)
        first = next(iter(part.entries.values()), None)
        if first is not None and len(first[1]) != len(vector):  # another model's size
            self._count -= len(part.entries)
            part.entries.clear()
        if key in part.entries:
            del part.entries[key]
            self._count -= 1
        ends = self._clock() + ttl_s
        part.entries[key] = (ends, vector)
        part.next_expiry = min(part.next_expiry, ends)
        part.changed()
        self._count += 1
        while len(part.entries) > max_entries:
            part.entries.popitem(last=False)
            self._count -= 1
        while self._count > self._max and self._parts:
            oldest = next(iter(self._parts.values()))
            oldest.entries.popitem(last=False)
            oldest.changed()
            self._count -= 1
            if not oldest.entries:
                self._parts.popitem(last=False)

    async def close(self) -> None:
        self._parts.clear()
        self._count = 0


# KEYS: vectors hash, expiry sorted set. ARGV: entry key, ttl ms, vector bytes, max.
# Redis's clock decides expiry, so replicas with skewed clocks agree.
_ADD = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local ttl = tonumber(ARGV[2])
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)
for _, member in ipairs(gone) do
  redis.call('HDEL', KEYS[1], member)
  redis.call('ZREM', KEYS[2], member)
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if over > 0 then
  for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, over - 1)) do
    redis.call('HDEL', KEYS[1], member)
    redis.call('ZREM', KEYS[2], member)
  end
end
for _, k in ipairs(KEYS) do
  if redis.call('PTTL', k) < ttl then redis.call('PEXPIRE', k, ttl) end
end
return 1
"""
# KEYS: vectors hash, expiry sorted set. Returns key, vector, key, vector, ...
_LIVE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local out = {}
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], now, '+inf')) do
  local vector = redis.call('HGET', KEYS[1], member)
  if vector then
    out[#out + 1] = member
    out[#out + 1] = vector
  end
end
return out
"""


class RedisSemantic:
    """On the exact cache's Redis client, which closes it."""

    def __init__(self, client: Any, *, prefix: str, metrics: Metrics) -> None:
        self._redis = client
        self._tag = "{" + prefix + "}:semantic:"
        self._metrics = metrics
        self._add = self._redis.register_script(_ADD)
        self._live = self._redis.register_script(_LIVE)

    def _keys(self, partition: str) -> list[str]:
        return [self._tag + partition + ":v", self._tag + partition + ":t"]

    async def nearest(self, partition: str, query: Vector) -> tuple[str, float] | None:
        from redis.exceptions import RedisError

        try:
            flat = await self._live(keys=self._keys(partition))
        except (RedisError, OSError):
            self._metrics.state_errors.inc(("semantic_get", "miss"))
            return None
        same = [
            (k.decode(), v)
            for k, v in zip(flat[0::2], flat[1::2], strict=True)
            if len(v) == len(query)
        ]
        if not same:
            return None
        return _best([k for k, _ in same], b"".join([row for _, row in same]), query)

    async def add(
        self, partition: str, key: str, vector: Vector, ttl_s: float, max_entries: int
    ) -> None:
        from redis.exceptions import RedisError

        ttl_ms = max(1, int(ttl_s * 1000))
        try:
            await self._add(keys=self._keys(partition), args=[key, ttl_ms, vector, max_entries])
        except (RedisError, OSError):
            self._metrics.state_errors.inc(("semantic_put", "skipped"))

    async def close(self) -> None:
        pass  # the client is the exact cache's

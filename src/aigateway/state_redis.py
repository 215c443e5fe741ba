"""The shared limit store: counters in Redis, so several replicas enforce one limit.

Admission and settlement are one Lua script each (one round trip, atomic), with
the same arithmetic as ``state_memory``. Scripts are called by SHA and reloaded
by redis-py when Redis answers ``NOSCRIPT`` (after a restart or ``SCRIPT
FLUSH``). Time comes from Redis (``TIME``), so replicas with drifting clocks
agree on windows. Every call is bounded by ``state.timeout_s``; any failure
raises ``StoreUnavailable`` and the caller decides (see ``state_fallback``).

Keys share one hash tag, ``{prefix}``, so a Redis Cluster keeps them on one slot.
A budget counter expires an hour after its window ends; rate counters after
three idle minutes; a slot set after the lease.
"""

from __future__ import annotations

from typing import Any

from aigateway import limits
from aigateway.quota import Admission, Plan, RateStatus, Settlement
from aigateway.state_memory import WINDOW_GRACE_S

_COMMON = """
local W = 60
-- numbers as text without losing digits (tostring keeps only 14)
local function f(x) return string.format('%.17g', x) end
local function now_s()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function roll(key, now)
  local v = redis.call('HMGET', key, 'i', 'p', 'c')
  local idx = math.floor(now / W)
  local i, p, c = tonumber(v[1]), tonumber(v[2]) or 0, tonumber(v[3]) or 0
  if i == nil then p, c = 0, 0
  elseif i == idx - 1 then p, c = c, 0
  elseif i ~= idx then p, c = 0, 0 end
  return idx, p, c
end
local function expire_holds(q, qz, now)
  local gone = redis.call('ZRANGEBYSCORE', qz, '-inf', now)
  for _, rid in ipairs(gone) do
    local amount = redis.call('HGET', q, 'h:' .. rid)
    if amount then
      redis.call('HINCRBY', q, 'reserved', -tonumber(amount))
      redis.call('HDEL', q, 'h:' .. rid)
    end
  end
  if #gone > 0 then redis.call('ZREMRANGEBYSCORE', qz, '-inf', now) end
end
"""

ADMIT = (
    _COMMON
    + """
local now = now_s()
local rid, lease = ARGV[1], tonumber(ARGV[2])
local min_units, units = tonumber(ARGV[3]), tonumber(ARGV[4])
local nq, nr, ns = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local a, k = 8, 1
local free, held, quotas = {}, {}, {}
for j = 1, nq do
  local q, qz = KEYS[k], KEYS[k + 1]
  local limit, fixed, per, ends = tonumber(ARGV[a]), tonumber(ARGV[a + 1]),
    tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  expire_holds(q, qz, now)
  local v = redis.call('HMGET', q, 'spent', 'reserved')
  local left = limit - (tonumber(v[1]) or 0) - (tonumber(v[2]) or 0)
  free[j] = left
  held[j] = tonumber(v[2]) or 0
  quotas[j] = {q, qz, fixed, per, ends}
  local room = left - fixed
  if per > 0 and room >= 0 then room = math.floor(room / per)
  elseif room >= 0 then room = units end
  if room < min_units then
    return {0, 'budget', j - 1, '0', free}
  end
  if room < units then units = room end
  a, k = a + 4, k + 2
end
local rates = {}
for j = 1, nr do
  local r = KEYS[k]
  local limit, fixed, per = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local idx, p, c = roll(r, now)
  local cost = fixed + per * units
  if p * (1 - (now % W) / W) + c + cost > limit then
    return {0, 'rate', j - 1, f(now), free, f(p), f(c), f(cost)}
  end
  rates[j] = {r, idx, p, c + cost}
  a, k = a + 3, k + 1
end
local slots = {}
for j = 1, ns do
  local s = KEYS[k]
  redis.call('ZREMRANGEBYSCORE', s, '-inf', now)
  if redis.call('ZCARD', s) >= tonumber(ARGV[a]) then
    return {0, 'concurrency', j - 1, f(now), free}
  end
  slots[j] = s
  a, k = a + 1, k + 1
end
for _, q in ipairs(quotas) do
  local amount = q[3] + q[4] * units
  redis.call('HINCRBY', q[1], 'reserved', amount)
  redis.call('HSET', q[1], 'h:' .. rid, amount)
  redis.call('ZADD', q[2], now + lease, rid)
  if q[5] > 0 then
    redis.call('EXPIREAT', q[1], q[5]); redis.call('EXPIREAT', q[2], q[5])
  end
end
local out = {1, 'ok', units, f(now), free, held}
for _, r in ipairs(rates) do
  redis.call('HSET', r[1], 'i', r[2], 'p', f(r[3]), 'c', f(r[4]))
  redis.call('EXPIRE', r[1], 3 * W)
  out[#out + 1] = f(r[3]); out[#out + 1] = f(r[4])
end
for _, s in ipairs(slots) do
  redis.call('ZADD', s, now + lease, rid)
  redis.call('EXPIRE', s, math.ceil(lease))
end
return out
"""
)

SETTLE = (
    _COMMON
    + """
local now = now_s()
local rid = ARGV[1]
local nq, nr, ns = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local a, k = 5, 1
for j = 1, nq do
  local q, qz = KEYS[k], KEYS[k + 1]
  local actual, ends = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local amount = redis.call('HGET', q, 'h:' .. rid)
  if amount then
    redis.call('HINCRBY', q, 'reserved', -tonumber(amount))
    redis.call('HDEL', q, 'h:' .. rid)
    redis.call('ZREM', qz, rid)
  end
  redis.call('HINCRBY', q, 'spent', actual)
  if ends > 0 then redis.call('EXPIREAT', q, ends) end
  a, k = a + 2, k + 2
end
for j = 1, nr do
  local r = KEYS[k]
  local idx, p, c = roll(r, now)
  c = math.max(0, c + tonumber(ARGV[a]))
  redis.call('HSET', r, 'i', idx, 'p', f(p), 'c', f(c))
  redis.call('EXPIRE', r, 3 * W)
  a, k = a + 1, k + 1
end
for j = 1, ns do
  redis.call('ZREM', KEYS[k], rid)
  k = k + 1
end
return 1
"""
)


#: waiting for a free pooled connection may take this many times state.timeout_s
POOL_WAIT_FACTOR = 10


class StoreUnavailable(Exception):
    """The shared state could not be reached in time (or answered with an error)."""


class RedisStore:
    def __init__(self, url: str, *, prefix: str, timeout_s: float, pool_size: int = 64) -> None:
        import redis.asyncio as aioredis

        # A bounded pool: a burst waits for a free connection instead of opening
        # hundreds (that wait is local congestion, so it gets a longer bound).
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=pool_size,
            timeout=max(timeout_s * POOL_WAIT_FACTOR, 1.0),
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry_on_timeout=False,
            decode_responses=True,
        )
        self._redis: Any = aioredis.Redis.from_pool(pool)  # owns the pool: closed with it
        self._admit = self._redis.register_script(ADMIT)
        self._settle = self._redis.register_script(SETTLE)
        self._tag = "{" + prefix + "}:"

    def _quota_keys(self, key: str) -> list[str]:
        return [self._tag + key, self._tag + key + ":holds"]

    async def admit(self, plan: Plan, now: float) -> Admission:
        keys: list[str] = []
        args: list[Any] = [
            plan.request_id,
            plan.lease_s,
            plan.min_units,
            plan.max_units,
            len(plan.quotas),
            len(plan.rates),
            len(plan.slots),
        ]
        for q in plan.quotas:
            keys += self._quota_keys(q.key)
            ends = int(q.ends + WINDOW_GRACE_S) if q.ends is not None else 0
            args += [q.limit, q.cost(plan.prompt_tokens, 0), q.per_unit, ends]
        for r in plan.rates:
            keys.append(self._tag + r.key)
            args += [r.limit, r.cost(plan.prompt_tokens, 0), r.per_unit]
        for s in plan.slots:
            keys.append(self._tag + s.key)
            args.append(s.limit)
        out = await self._call(self._admit, keys, args)
        return _admission(plan, out)

    async def settle(self, settlement: Settlement, now: float) -> None:
        s = settlement
        keys: list[str] = []
        args: list[Any] = [s.request_id, len(s.quotas), len(s.rates), len(s.slots)]
        for key, actual, ends in s.quotas:
            keys += self._quota_keys(key)
            args += [actual, int(ends + WINDOW_GRACE_S) if ends is not None else 0]
        for key, delta in s.rates:
            keys.append(self._tag + key)
            args.append(delta)
        keys += [self._tag + key for key in s.slots]
        await self._call(self._settle, keys, args)

    async def spent(self, key: str) -> int:
        value = await self._call_raw(self._redis.hget(self._tag + key, "spent"))
        return int(value or 0)

    async def ping(self) -> bool:
        try:
            return bool(await self._call_raw(self._redis.ping()))
        except StoreUnavailable:
            return False

    async def close(self) -> None:
        await self._redis.aclose()

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        return await self._call_raw(script(keys=keys, args=args))

    async def _call_raw(self, awaitable: Any) -> Any:
        from redis.exceptions import RedisError

        try:
            return await awaitable
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(type(exc).__name__) from None


def _admission(plan: Plan, out: list[Any]) -> Admission:
    ok, what = int(out[0]), str(out[1])
    if not ok:
        free = out[4] if len(out) > 4 else []
        index = int(out[2])
        if what == "budget":
            return Admission(False, free=_ints(free), refused="budget", refused_index=index)
        now = float(out[3])
        if what == "rate":
            prev, curr, cost = float(out[5]), float(out[6]), float(out[7])
            limit = plan.rates[index].limit
            wait = limits.retry_after_s(prev, curr, cost, limit, now)
            return Admission(
                False, free=_ints(free), refused="rate", refused_index=index, retry_after_s=wait
            )
        return Admission(
            False, free=_ints(free), refused="concurrency", refused_index=index, retry_after_s=1.0
        )
    units, now = int(out[2]), float(out[3])
    free, held = _ints(out[4]), _ints(out[5])
    statuses = []
    for j, check in enumerate(plan.rates):
        prev, curr = float(out[6 + 2 * j]), float(out[7 + 2 * j])
        used = limits.sliding_count(prev, curr, now)
        statuses.append(
            RateStatus(
                check.kind,
                check.limit,
                max(0, int(check.limit - used)),
                limits.reset_s(prev, curr, now),
            )
        )
    return Admission(True, units=units, rates=statuses, free=free, reserved=held)


def _ints(values: Any) -> list[int]:
    return [int(v) for v in values] if isinstance(values, list) else []

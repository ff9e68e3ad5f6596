"""The Redis side of `FleetSlots`: its keys, and the Lua scripts that change them atomically on Redis's clock.

Keys of one host (all with the hash tag `{host:port}`, so they live on one
cluster slot):

    <prefix>:{h}:hold     sorted set: slot holders, scored by lease expiry (ms)
    <prefix>:{h}:wait     sorted set: workers waiting for a slot, scored by expiry (ms)
    <prefix>:{h}:pace     string: the theoretical arrival time (GCRA) of the next request (ms)
    <prefix>:{h}:state    hash: `limit` (adaptive concurrency, float), `base` (latency floor, ms),
                          `pause` (no request starts before this time, ms)

Beside them, `<prefix>:wake` is the pub/sub channel of the host's news: "host"
(a release while workers wait for it), "host TAB ms" (a Retry-After pause),
"host TAB TAB waiter" (a worker found it full and waits), and
`<prefix>:tag:<tag>` the set of hosts requested under a tag (a job's, for its
stats).

Times are milliseconds of Redis's clock, so workers on machines with skewed
clocks still agree. Expired holders are removed on every acquire: a killed
worker's slots come back once their lease (WORKER_LEASE_SECONDS) runs out.
"""

from __future__ import annotations

PREFIX = "batchfetch:hosts"


def host_keys(host: str, prefix: str = PREFIX) -> dict[str, str]:
    """The Redis keys of one host (`host` is "name:port")."""
    tag = f"{prefix}:{{{host}}}"
    return {name: f"{tag}:{name}" for name in ("hold", "wait", "pace", "state")}


def wake_channel(prefix: str = PREFIX) -> str:
    """The pub/sub channel a release publishes the host's name on when workers wait for it."""
    return f"{prefix}:wake"


def tag_key(tag: str, prefix: str = PREFIX) -> str:
    """The Redis set of the hosts requested under `tag` (e.g. one job's), for the stats."""
    return f"{prefix}:tag:{tag}"

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

ACQUIRE = (
    _NOW
    + """
-- KEYS: hold, wait, pace, state.
-- ARGV: holder, waiter, limit, lease_ms, interval_ms, adaptive, wait_ttl_ms, channel, host
-- Returns {1, ms to wait before sending (pacing)} when a slot was taken,
--         {0, ms until the host's pause ends} or {0, -1} (full: wait for a wake-up) otherwise;
-- when full, publishes "host TAB TAB waiter", so the workers keeping idle slots give them back.
local pause = tonumber(redis.call('HGET', KEYS[4], 'pause') or '0')
if pause > now then
  return {0, pause - now}
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local cap = tonumber(ARGV[3])
if ARGV[6] == '1' then
  local adaptive = tonumber(redis.call('HGET', KEYS[4], 'limit') or '1')
  cap = math.max(1, math.min(cap, math.floor(adaptive)))
end
if redis.call('ZCARD', KEYS[1]) >= cap then
  local ttl = tonumber(ARGV[7])
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ttl * 2)
  redis.call('PUBLISH', ARGV[8], ARGV[9] .. '\t\t' .. ARGV[2])
  return {0, -1}
end
local lease = tonumber(ARGV[4])
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[1], lease * 2)
redis.call('ZREM', KEYS[2], ARGV[2])
local interval = tonumber(ARGV[5])
if interval <= 0 then
  return {1, 0}
end
-- GCRA with a burst of one: each request starts `interval` after the previous one, or now if later.
local start = math.max(now, tonumber(redis.call('GET', KEYS[3]) or '0'))
redis.call('SET', KEYS[3], tostring(start + interval), 'PX', math.ceil(start + interval - now) + 1000)
return {1, math.ceil(start - now)}
"""
)

RELEASE = (
    _NOW
    + """
-- KEYS: hold, wait. ARGV: holder, channel, host key, waiter. Wakes the waiting workers, if any.
-- Returns {removed, how many other workers wait}.
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local waiting = redis.call('ZCARD', KEYS[2])
if waiting > 0 then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
if redis.call('ZSCORE', KEYS[2], ARGV[4]) then
  waiting = waiting - 1
end
return {removed, waiting}
"""
)

RENEW = (
    _NOW
    + """
-- KEYS: hold. ARGV: lease_ms, holder... Extends the leases of holders still there (XX: never re-adds one).
local lease = tonumber(ARGV[1])
local renewed = 0
for i = 2, #ARGV do
  renewed = renewed + redis.call('ZADD', KEYS[1], 'XX', 'CH', now + lease, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], lease * 2)
return renewed
"""
)

OBSERVE = (
    _NOW
    + """
-- KEYS: state, wait. ARGV: latency_ms, status, pause_ms, per_host, adaptive, channel, host key.
-- Returns the adaptive limit after this response (0 when not adaptive). See autothrottle in fleetslots.py.
local pause_ms = tonumber(ARGV[3])
if pause_ms > 0 then
  local pause = math.max(tonumber(redis.call('HGET', KEYS[1], 'pause') or '0'), now + pause_ms)
  redis.call('HSET', KEYS[1], 'pause', pause)
  -- Every worker hears of it at once (host TAB ms), so none hands a slot over locally meanwhile.
  redis.call('PUBLISH', ARGV[6], ARGV[7] .. '\t' .. tostring(pause - now))
end
local limit = 0
if ARGV[5] == '1' then
  local per_host = tonumber(ARGV[4])
  limit = tonumber(redis.call('HGET', KEYS[1], 'limit') or '1')
  local before = math.floor(limit)
  local status = tonumber(ARGV[2])
  local latency = tonumber(ARGV[1])
  if status == 429 or status == 503 then
    limit = limit / 2
  elseif latency >= 0 then
    local base = tonumber(redis.call('HGET', KEYS[1], 'base') or '-1')
    if base < 0 or latency < base then
      base = latency
    else
      base = base + (latency - base) * 0.01
    end
    redis.call('HSET', KEYS[1], 'base', tostring(base))
    if latency <= 2 * base + 10 then
      limit = limit + 1 / limit
    else
      limit = limit * 0.9
    end
  end
  limit = math.max(1, math.min(per_host, limit))
  redis.call('HSET', KEYS[1], 'limit', tostring(limit))
  if math.floor(limit) > before then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
    if redis.call('ZCARD', KEYS[2]) > 0 then
      redis.call('PUBLISH', ARGV[6], ARGV[7])
    end
  end
end
redis.call('PEXPIRE', KEYS[1], 600000)
return tostring(limit)
"""
)

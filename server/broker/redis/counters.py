"""Fixed-window counters in Redis, shared by every process (the log-in throttle, rate limits)."""

from __future__ import annotations

from nameplate.broker.contracts import Counters
from nameplate.broker.redis.link import RedisLink

# KEYS: counter; ARGV: window in ms, cost. Cost 0 only looks, but like the memory backend it starts the
# window if there is none. A counter that somehow lost its TTL gets one again.
_HIT = """
local n = redis.call('INCRBY', KEYS[1], ARGV[2])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
"""


class RedisCounters(Counters):
    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self._hit_script = link.redis.register_script(_HIT)

    async def hit(self, key: str, limit: int, window: float, cost: int = 1) -> tuple[bool, float]:
        count, ttl_ms = await self._hit_script(
            keys=[self._link.key("hit", key)], args=[max(1, round(window * 1000)), cost]
        )
        return int(count) <= limit, max(0.0, int(ttl_ms) / 1000)

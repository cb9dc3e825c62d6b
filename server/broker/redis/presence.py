"""Agent presence in Redis: which agents have live sockets, agreed on by every process.

Per agent a sorted set of connection ids scored by expiry time, and per site a hash of `gone_since` per
agent. Expiry times are taken from the Redis server clock (`TIME` inside the scripts), so processes with
skewed clocks still agree on who is live. `take_gone_agents` runs one Lua script per agent that prunes
expired sockets, checks the grace period and flips the agent to `offline` in its routing record; only the
caller whose script did the flip gets the agent, so each gone agent is handed out exactly once.
"""

from __future__ import annotations

from nameplate.broker.contracts import PresenceRegistry
from nameplate.broker.redis.link import RedisLink

_LUA_CLOCK = """
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
-- Lua turns numbers into strings with 14 significant digits; keep microseconds explicitly.
local function fmt(x) return string.format('%.6f', x) end
-- Drop expired sockets; the agent is gone since the last of them expired (like a silent process death).
local function prune(connections, gone, agent_id, t)
  local expired = redis.call('ZRANGEBYSCORE', connections, '-inf', fmt(t), 'WITHSCORES')
  if #expired > 0 then
    local since = tonumber(redis.call('HGET', gone, agent_id) or '0')
    for i = 2, #expired, 2 do since = math.max(since, tonumber(expired[i])) end
    redis.call('HSET', gone, agent_id, fmt(since))
    redis.call('ZREMRANGEBYSCORE', connections, '-inf', fmt(t))
  end
  return redis.call('ZCARD', connections)
end
"""

# KEYS: connections; ARGV: connection id, ttl
_CONNECT = (
    _LUA_CLOCK
    + """
redis.call('ZADD', KEYS[1], fmt(now() + tonumber(ARGV[2])), ARGV[1])
return 1
"""
)

# KEYS: connections of each socket; ARGV: ttl, then the connection id of each socket
_REFRESH = (
    _LUA_CLOCK
    + """
local expires = fmt(now() + tonumber(ARGV[1]))
for i, key in ipairs(KEYS) do redis.call('ZADD', key, expires, ARGV[i + 1]) end
return #KEYS
"""
)

# KEYS: connections, gone; ARGV: connection id, agent id
_DISCONNECT = (
    _LUA_CLOCK
    + """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[2], fmt(now()))
return 1
"""
)

# KEYS: connections, gone; ARGV: agent id
_LIVE_COUNT = (
    _LUA_CLOCK
    + """
return prune(KEYS[1], KEYS[2], ARGV[1], now())
"""
)

# KEYS: agent, connections, gone, version; ARGV: agent id, grace. Returns 1 to the one caller that wins.
_TAKE_GONE = (
    _LUA_CLOCK
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if (not status) or status == 'offline' then return 0 end
local t = now()
if prune(KEYS[2], KEYS[3], ARGV[1], t) > 0 then return 0 end
local since = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
if since + tonumber(ARGV[2]) > t then return 0 end
redis.call('HSET', KEYS[1], 'status', 'offline')
redis.call('INCR', KEYS[4])
return 1
"""
)


class RedisPresence(PresenceRegistry):
    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self._connect_script = link.redis.register_script(_CONNECT)
        self._refresh_script = link.redis.register_script(_REFRESH)
        self._disconnect_script = link.redis.register_script(_DISCONNECT)
        self._live_count_script = link.redis.register_script(_LIVE_COUNT)
        self._take_gone_script = link.redis.register_script(_TAKE_GONE)

    async def agent_connected(self, site_id: str, agent_id: str, connection_id: str, ttl: float) -> None:
        await self._connect_script(
            keys=[self._link.agent_key(site_id, agent_id, "connections")], args=[connection_id, ttl]
        )

    async def agent_disconnected(self, site_id: str, agent_id: str, connection_id: str) -> None:
        await self._disconnect_script(
            keys=[self._link.agent_key(site_id, agent_id, "connections"), self._link.site_key(site_id, "gone")],
            args=[connection_id, agent_id],
        )

    async def refresh_connections(self, connections: list[tuple[str, str, str]], ttl: float) -> None:
        if not connections:
            return
        await self._refresh_script(
            keys=[self._link.agent_key(site_id, agent_id, "connections") for site_id, agent_id, _ in connections],
            args=[ttl, *(connection_id for _, _, connection_id in connections)],
        )

    async def live_connection_count(self, site_id: str, agent_id: str) -> int:
        count = await self._live_count_script(
            keys=[self._link.agent_key(site_id, agent_id, "connections"), self._link.site_key(site_id, "gone")],
            args=[agent_id],
        )
        return int(count)

    async def take_gone_agents(self, grace: float) -> list[tuple[str, str]]:
        # The clients decode responses: members are str.
        sites: list[str] = sorted(await self._link.redis.smembers(self._link.key("sites")))  # type: ignore[arg-type]
        if not sites:
            return []
        async with self._link.redis.pipeline(transaction=False) as pipe:
            for site_id in sites:
                pipe.smembers(self._link.site_key(site_id, "agents"))
            members: list[set[str]] = await pipe.execute()
        candidates = [
            (site_id, agent_id)
            for site_id, agent_ids in zip(sites, members, strict=True)
            for agent_id in sorted(agent_ids)
        ]
        if not candidates:
            return []
        async with self._link.redis.pipeline(transaction=False) as pipe:
            for site_id, agent_id in candidates:
                await self._take_gone_script(
                    keys=[
                        self._link.agent_key(site_id, agent_id),
                        self._link.agent_key(site_id, agent_id, "connections"),
                        self._link.site_key(site_id, "gone"),
                        self._link.site_key(site_id, "version"),
                    ],
                    args=[agent_id, grace],
                    client=pipe,
                )
            won = await pipe.execute()
        return [candidate for candidate, result in zip(candidates, won, strict=True) if int(result) == 1]

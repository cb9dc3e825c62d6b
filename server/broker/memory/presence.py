"""Agent sockets with expiry, in one process. A gone agent is marked offline in the routing state."""

from __future__ import annotations

import time
from collections import defaultdict

from nameplate.broker.contracts import PresenceRegistry
from nameplate.broker.memory.routing import MemoryRoutingState


class MemoryPresence(PresenceRegistry):
    def __init__(self, routing: MemoryRoutingState) -> None:
        self._routing = routing
        self._connections: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
        self._gone_since: dict[tuple[str, str], float] = {}

    async def agent_connected(self, site_id: str, agent_id: str, connection_id: str, ttl: float) -> None:
        self._connections[(site_id, agent_id)][connection_id] = time.time() + ttl

    async def agent_disconnected(self, site_id: str, agent_id: str, connection_id: str) -> None:
        key = (site_id, agent_id)
        self._connections[key].pop(connection_id, None)
        self._gone_since[key] = time.time()

    async def refresh_connections(self, connections: list[tuple[str, str, str]], ttl: float) -> None:
        expires = time.time() + ttl
        for site_id, agent_id, connection_id in connections:
            self._connections[(site_id, agent_id)][connection_id] = expires

    def _live(self, key: tuple[str, str], now: float) -> int:
        live = self._connections.get(key, {})
        for connection_id, expires in list(live.items()):
            if expires <= now:
                # A process that died never said goodbye: its socket is gone since it stopped refreshing.
                del live[connection_id]
                self._gone_since[key] = max(self._gone_since.get(key, 0.0), expires)
        return len(live)

    async def live_connection_count(self, site_id: str, agent_id: str) -> int:
        return self._live((site_id, agent_id), time.time())

    async def take_gone_agents(self, grace: float) -> list[tuple[str, str]]:
        now = time.time()

        def gone(site_id: str, agent_id: str) -> bool:
            key = (site_id, agent_id)
            return not self._live(key, now) and self._gone_since.get(key, 0.0) + grace <= now

        return await self._routing.take_offline(gone)

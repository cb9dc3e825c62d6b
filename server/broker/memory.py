"""In-process broker: the embedded default for a single server process. Same contract as Redis."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import replace

from nameplate.broker.base import Broker, Event, Handler
from nameplate.protocol.vocabulary import Presence
from nameplate.routing.plan import AgentState, QueueEntry, plan_assignments

log = logging.getLogger("nameplate.broker")


def dispatch(handlers: set[Handler] | None, event: Event) -> None:
    """Run every local handler; one failing handler must not starve the others."""
    for handler in list(handlers or ()):
        try:
            handler(event)
        except Exception:
            log.exception("broker handler failed")


class MemoryBroker(Broker):
    def __init__(self) -> None:
        self._channels: dict[str, set[Handler]] = defaultdict(set)
        self._connections: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
        self._gone_since: dict[tuple[str, str], float] = {}
        self._agents: dict[str, dict[str, AgentState]] = defaultdict(dict)
        self._queues: dict[str, dict[str, QueueEntry]] = defaultdict(dict)
        self._counters: dict[str, tuple[int, float]] = {}
        self._lock = asyncio.Lock()

    # -- fan-out -----------------------------------------------------------------------------------
    async def publish(self, channel: str, event: Event) -> None:
        dispatch(self._channels.get(channel), event)

    def publish_soon(self, channel: str, event: Event) -> None:
        dispatch(self._channels.get(channel), event)

    async def subscribe(self, channel: str, handler: Handler) -> None:
        self._channels[channel].add(handler)

    async def unsubscribe(self, channel: str, handler: Handler) -> None:
        handlers = self._channels.get(channel)
        if handlers is not None:
            handlers.discard(handler)
            if not handlers:
                del self._channels[channel]

    # -- presence ----------------------------------------------------------------------------------
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
        gone: list[tuple[str, str]] = []
        async with self._lock:
            for site_id, agents in self._agents.items():
                for agent_id, state in list(agents.items()):
                    key = (site_id, agent_id)
                    if state.status == Presence.offline or self._live(key, now):
                        continue
                    if self._gone_since.get(key, 0.0) + grace <= now:
                        agents[agent_id] = replace(state, status=Presence.offline)
                        gone.append(key)
        return gone

    # -- routing state -----------------------------------------------------------------------------
    async def set_agent_status(
        self, site_id: str, agent_id: str, status: str, capacity: int, teams: frozenset[str]
    ) -> None:
        async with self._lock:
            current = self._agents[site_id].get(agent_id)
            if current is None:
                self._agents[site_id][agent_id] = AgentState(
                    agent_id, status, capacity, teams=teams, last_assigned_at=time.time()
                )
            else:
                became_available = status == Presence.available and current.status != Presence.available
                self._agents[site_id][agent_id] = replace(
                    current,
                    status=status,
                    capacity=capacity,
                    teams=teams,
                    last_assigned_at=time.time() if became_available else current.last_assigned_at,
                )

    async def agents(self, site_id: str) -> list[AgentState]:
        return list(self._agents.get(site_id, {}).values())

    async def enqueue(self, site_id: str, entry: QueueEntry, front: bool = False) -> None:
        async with self._lock:
            queue = self._queues[site_id]
            if front:
                lowest = min((e.score for e in queue.values()), default=entry.score)
                entry = replace(entry, score=min(lowest, entry.score) - 1.0)
            queue[entry.conversation_id] = entry

    async def dequeue(self, site_id: str, conversation_id: str) -> bool:
        async with self._lock:
            return self._queues[site_id].pop(conversation_id, None) is not None

    async def queue(self, site_id: str) -> list[QueueEntry]:
        return sorted(self._queues.get(site_id, {}).values(), key=lambda e: e.score)

    async def assign(self, site_id: str, now: float) -> list[tuple[str, str]]:
        async with self._lock:
            queue = self._queues[site_id]
            agents = self._agents[site_id]
            pairs = plan_assignments(list(queue.values()), list(agents.values()), now)
            for conversation_id, agent_id in pairs:
                del queue[conversation_id]
                state = agents[agent_id]
                agents[agent_id] = replace(
                    state, conversations=state.conversations | {conversation_id}, last_assigned_at=now
                )
            return pairs

    async def attach(self, site_id: str, agent_id: str, conversation_id: str) -> None:
        async with self._lock:
            self._queues[site_id].pop(conversation_id, None)
            state = self._agents[site_id].get(agent_id) or AgentState(agent_id, Presence.offline, 0)
            self._agents[site_id][agent_id] = replace(state, conversations=state.conversations | {conversation_id})

    async def detach(self, site_id: str, agent_id: str, conversation_id: str) -> None:
        async with self._lock:
            state = self._agents[site_id].get(agent_id)
            if state is not None:
                self._agents[site_id][agent_id] = replace(state, conversations=state.conversations - {conversation_id})

    async def replace_site_state(
        self, site_id: str, queue: list[QueueEntry], conversations_by_agent: dict[str, set[str]]
    ) -> None:
        async with self._lock:
            self._queues[site_id] = {e.conversation_id: e for e in queue}
            agents = self._agents[site_id]
            for agent_id, conversations in conversations_by_agent.items():
                state = agents.get(agent_id) or AgentState(agent_id, Presence.offline, 0)
                agents[agent_id] = replace(state, conversations=frozenset(conversations))

    # -- counters ----------------------------------------------------------------------------------
    async def hit(self, key: str, limit: int, window: float, cost: int = 1) -> tuple[bool, float]:
        now = time.time()
        count, resets_at = self._counters.get(key, (0, now + window))
        if resets_at <= now:
            count, resets_at = 0, now + window
        count += cost
        self._counters[key] = (count, resets_at)
        return count <= limit, max(0.0, resets_at - now)

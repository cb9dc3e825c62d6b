"""Queues and agents of each site, in one process. Every change holds one lock, as Redis's transactions do."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace

from nameplate.broker.contracts import RoutingState
from nameplate.protocol.vocabulary import Presence
from nameplate.routing.plan import AgentState, QueueEntry, plan_assignments


class MemoryRoutingState(RoutingState):
    def __init__(self) -> None:
        self._agents: dict[str, dict[str, AgentState]] = defaultdict(dict)
        self._queues: dict[str, dict[str, QueueEntry]] = defaultdict(dict)
        self._lock = asyncio.Lock()

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

    async def take_offline(self, gone: Callable[[str, str], bool]) -> list[tuple[str, str]]:
        """Mark offline every agent not offline yet for whom `gone(site_id, agent_id)` holds (presence
        decides who is gone; the routing record is where "offline" lives)."""
        taken: list[tuple[str, str]] = []
        async with self._lock:
            for site_id, agents in self._agents.items():
                for agent_id, state in list(agents.items()):
                    if state.status != Presence.offline and gone(site_id, agent_id):
                        agents[agent_id] = replace(state, status=Presence.offline)
                        taken.append((site_id, agent_id))
        return taken

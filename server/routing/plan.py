"""The pairing decision as a pure function: who gets which queued conversation. No I/O, tested directly.

Both broker backends call `plan_assignments` inside their own atomic step (a lock in memory, a WATCHed
transaction in Redis), so the rules live in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from nameplate.protocol.vocabulary import Presence


@dataclass(frozen=True)
class QueueEntry:
    conversation_id: str
    # Seconds since the epoch; lower waits longer. Requeued chats get a score below everyone else's.
    score: float
    team_id: str | None = None
    # The customer's previous agent ("personal concierge"), preferred when they have room.
    preferred_agent_id: str | None = None
    # The visitor chose to wait for the preferred agent rather than take the next available person.
    only_preferred: bool = False


@dataclass(frozen=True)
class AgentState:
    agent_id: str
    status: str  # available | away | offline
    capacity: int
    conversations: frozenset[str] = field(default_factory=frozenset)
    teams: frozenset[str] = field(default_factory=frozenset)
    # When the agent last received a chat (or came online): ties in load go to the longest idle.
    last_assigned_at: float = 0.0

    @property
    def load(self) -> int:
        return len(self.conversations)

    @property
    def has_room(self) -> bool:
        return self.status == Presence.available and self.load < self.capacity


def _eligible(agent: AgentState, entry: QueueEntry) -> bool:
    if not agent.has_room:
        return False
    if entry.only_preferred:
        return agent.agent_id == entry.preferred_agent_id
    return entry.team_id is None or entry.team_id in agent.teams


def plan_assignments(queue: list[QueueEntry], agents: list[AgentState], now: float) -> list[tuple[str, str]]:
    """Pair queued conversations with agents: longest-waiting first; the preferred agent if they have
    room, else the least busy eligible agent, ties to the one idle longest. Returns (conversation, agent)
    pairs in the order they were decided."""
    by_id = {agent.agent_id: agent for agent in agents}
    pairs: list[tuple[str, str]] = []
    for entry in sorted(queue, key=lambda e: e.score):
        if not any(a.has_room for a in by_id.values()):
            break
        candidates = [a for a in by_id.values() if _eligible(a, entry)]
        if not candidates:
            continue
        preferred = by_id.get(entry.preferred_agent_id or "")
        if preferred is not None and preferred in candidates:
            chosen = preferred
        else:
            chosen = min(candidates, key=lambda a: (a.load, a.last_assigned_at, a.agent_id))
        by_id[chosen.agent_id] = replace(
            chosen, conversations=chosen.conversations | {entry.conversation_id}, last_assigned_at=now
        )
        pairs.append((entry.conversation_id, chosen.agent_id))
    return pairs


def queue_order(queue: list[QueueEntry]) -> list[str]:
    return [entry.conversation_id for entry in sorted(queue, key=lambda e: e.score)]

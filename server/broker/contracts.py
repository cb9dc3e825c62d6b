"""The broker's four small contracts. Each backend (`memory/`, `redis/`) implements all four; a caller
depends only on the one it uses.

- `FanOut`: publish an event on a channel; every process's local subscribers get it.
- `PresenceRegistry`: which agents have live sockets, with a grace period before they count as gone.
- `RoutingState`: per-site queue and agents (status, capacity, teams, their conversations), changed only
  through methods that are atomic across processes.
- `Counters`: fixed-window counters shared by all processes (rate limits).

Handlers are plain callables run on the event loop: they must not block and must not raise (a raising
handler is logged and skipped; the others still get the event — `dispatch`, shared by both backends).
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nameplate.routing.plan import AgentState, QueueEntry

log = logging.getLogger("nameplate.broker")

Event = dict[str, Any]
Handler = Callable[[Event], None]
ResetCallback = Callable[[], Awaitable[None]]


def dispatch(handlers: set[Handler] | None, event: Event) -> None:
    """Run every local handler; one failing handler must not starve the others."""
    for handler in list(handlers or ()):
        try:
            handler(event)
        except Exception:
            log.exception("broker handler failed")


class FanOut(abc.ABC):
    @abc.abstractmethod
    async def publish(self, channel: str, event: Event) -> None:
        """Deliver to this process's subscribers now; returns once every other process can have it."""

    @abc.abstractmethod
    def publish_soon(self, channel: str, event: Event) -> None:
        """Deliver to this process's subscribers now and send to the other processes in the background, in
        order with every other publish of this process; a failure there is logged, not raised. For a
        caller that must not wait for the broker's round trip: a stored message's ack, which promises that
        the message is stored, not that every process has it (a socket that missed it live gets it from
        the store when it resumes)."""

    async def publish_many(self, events: list[tuple[str, Event]]) -> None:
        """Publish several events; backends with a network round trip send them together."""
        for channel, event in events:
            await self.publish(channel, event)

    @abc.abstractmethod
    async def subscribe(self, channel: str, handler: Handler) -> None: ...

    @abc.abstractmethod
    async def unsubscribe(self, channel: str, handler: Handler) -> None: ...


class PresenceRegistry(abc.ABC):
    @abc.abstractmethod
    async def agent_connected(self, site_id: str, agent_id: str, connection_id: str, ttl: float) -> None:
        """A socket for this agent is open; it counts as live for `ttl` seconds unless refreshed."""

    @abc.abstractmethod
    async def agent_disconnected(self, site_id: str, agent_id: str, connection_id: str) -> None: ...

    @abc.abstractmethod
    async def refresh_connections(self, connections: list[tuple[str, str, str]], ttl: float) -> None:
        """Heartbeat: extend the life of these (site_id, agent_id, connection_id) sockets."""

    @abc.abstractmethod
    async def live_connection_count(self, site_id: str, agent_id: str) -> int: ...

    @abc.abstractmethod
    async def take_gone_agents(self, grace: float) -> list[tuple[str, str]]:
        """Agents (site_id, agent_id) not offline, with no live socket for at least `grace` seconds.
        Marks each offline (in the routing state) and returns it to exactly one caller across all
        processes; their conversations stay recorded so the caller can requeue them."""


class RoutingState(abc.ABC):
    @abc.abstractmethod
    async def set_agent_status(
        self, site_id: str, agent_id: str, status: str, capacity: int, teams: frozenset[str]
    ) -> None:
        """Create or update an agent's routing record; keeps their current conversations."""

    @abc.abstractmethod
    async def agents(self, site_id: str) -> list[AgentState]: ...

    @abc.abstractmethod
    async def enqueue(self, site_id: str, entry: QueueEntry, front: bool = False) -> None:
        """Add to the site's queue (or update the entry). `front` places it ahead of everyone."""

    @abc.abstractmethod
    async def dequeue(self, site_id: str, conversation_id: str) -> bool:
        """Remove from the queue; True if it was there."""

    @abc.abstractmethod
    async def queue(self, site_id: str) -> list[QueueEntry]:
        """The site's queue, longest-waiting first."""

    @abc.abstractmethod
    async def assign(self, site_id: str, now: float) -> list[tuple[str, str]]:
        """Atomically pair queued conversations with agents that have room (see routing.plan), move them
        out of the queue and into the agents' conversation sets. Never gives one conversation to two
        agents, never exceeds capacity, whichever processes call it at once."""

    @abc.abstractmethod
    async def attach(self, site_id: str, agent_id: str, conversation_id: str) -> None:
        """Record a conversation as the agent's (direct transfer, rebuild); removes it from the queue."""

    @abc.abstractmethod
    async def detach(self, site_id: str, agent_id: str, conversation_id: str) -> None:
        """The agent no longer holds this conversation (closed, transferred away, requeued). Idempotent."""

    @abc.abstractmethod
    async def replace_site_state(
        self, site_id: str, queue: list[QueueEntry], conversations_by_agent: dict[str, set[str]]
    ) -> None:
        """Rebuild after a state loss: the queue and each known agent's conversations, from the store."""


class Counters(abc.ABC):
    @abc.abstractmethod
    async def hit(self, key: str, limit: int, window: float, cost: int = 1) -> tuple[bool, float]:
        """Count `cost` attempts (0 just looks) in a fixed window shared by all processes.
        Returns (count still within limit, seconds until the window resets)."""

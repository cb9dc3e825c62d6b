"""The broker: one per process, four small contracts (see `contracts`) over one backend, and the
backend's lifecycle. Callers use the part they need: `broker.fanout`, `broker.presence`,
`broker.routing`, `broker.counters`."""

from __future__ import annotations

from nameplate.broker.contracts import (
    Counters,
    Event,
    FanOut,
    Handler,
    PresenceRegistry,
    ResetCallback,
    RoutingState,
)

__all__ = ["Broker", "Event", "Handler", "ResetCallback"]


class Broker:
    def __init__(self, fanout: FanOut, presence: PresenceRegistry, routing: RoutingState, counters: Counters) -> None:
        self.fanout = fanout
        self.presence = presence
        self.routing = routing
        self.counters = counters

    async def connect(self) -> None:
        """Open connections and start background readers (nothing to do in memory)."""

    async def disconnect(self) -> None:
        """Stop background work and close connections."""

    async def healthy(self) -> bool:
        """True while the backend answers (the memory backend always does)."""
        return True

    def on_reset(self, callback: ResetCallback) -> None:
        """Register a coroutine to run after the backend lost its state (e.g. Redis flushed or restarted),
        so the app can rebuild queue, loads and presence from the store and its live sockets. The memory
        backend never loses its state while the process lives."""

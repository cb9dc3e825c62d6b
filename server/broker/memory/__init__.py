"""In-process broker: the embedded default for a single server process. Same contracts as Redis."""

from __future__ import annotations

from nameplate.broker.base import Broker
from nameplate.broker.memory.counters import MemoryCounters
from nameplate.broker.memory.fanout import MemoryFanOut
from nameplate.broker.memory.presence import MemoryPresence
from nameplate.broker.memory.routing import MemoryRoutingState


class MemoryBroker(Broker):
    def __init__(self) -> None:
        routing = MemoryRoutingState()
        super().__init__(MemoryFanOut(), MemoryPresence(routing), routing, MemoryCounters())

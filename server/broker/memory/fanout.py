"""Fan-out inside one process: a publish runs every subscribed handler at once, in publish order."""

from __future__ import annotations

from collections import defaultdict

from nameplate.broker.contracts import Event, FanOut, Handler, dispatch


class MemoryFanOut(FanOut):
    def __init__(self) -> None:
        self._channels: dict[str, set[Handler]] = defaultdict(set)

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

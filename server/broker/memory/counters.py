"""Fixed-window counters in one process (the log-in throttle, rate limits)."""

from __future__ import annotations

import time

from nameplate.broker.contracts import Counters


class MemoryCounters(Counters):
    def __init__(self) -> None:
        self._counters: dict[str, tuple[int, float]] = {}

    async def hit(self, key: str, limit: int, window: float, cost: int = 1) -> tuple[bool, float]:
        now = time.time()
        count, resets_at = self._counters.get(key, (0, now + window))
        if resets_at <= now:
            count, resets_at = 0, now + window
        count += cost
        self._counters[key] = (count, resets_at)
        return count <= limit, max(0.0, resets_at - now)

"""The broker: fast, ephemeral, shared state (fan-out, presence, routing queue). The store stays the truth."""

from __future__ import annotations

from nameplate.broker.base import Broker


def make_broker(redis_url: str | None, prefix: str = "nameplate:") -> Broker:
    """Pick the backend from the URL: none → in-process memory, redis:// or rediss:// → Redis."""
    if not redis_url or redis_url.startswith("memory://"):
        from nameplate.broker.memory import MemoryBroker

        return MemoryBroker()
    if redis_url.startswith(("redis://", "rediss://", "unix://")):
        from nameplate.broker.redis import RedisBroker

        return RedisBroker(redis_url, prefix=prefix)
    raise ValueError(f"REDIS_URL has an unknown scheme: {redis_url.split(':', 1)[0]!r}")

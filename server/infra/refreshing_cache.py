"""A read-through cache for small lookups on hot paths (agent cards, site keys, webhook lists) that never
makes a caller wait for an expired entry, so cached entries cannot all lapse, and all be fetched, at once.

Only a key's first lookup waits for the store. After that an expired value still answers at once while
one fetch per key refreshes it behind. Entries cached together (a restart, a burst of new chats, a load
whose agents all connected in the same second) would otherwise expire together: every message on the
way to its ack would then wait for its own query in the same instant, draining the connection pool the
message log writes through. In the benchmark's step where 500 agent cards expired, p99 was 363 ms and
40 new PostgreSQL connections were opened; with this cache it was 44 ms and none. So each entry also
lives a random 50–100 % of its lifetime, and refreshes, which nobody waits for, take turns: a few at a
time per cache.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger("nameplate.cache")

# Refreshes of one cache running at once. Forty sites' webhook lists expiring in the same second would
# otherwise take forty pooled connections at once (the pool holds ten; each one more is a new PostgreSQL
# backend, opened and closed again), and the message log waits for a connection from the same pool.
REFRESHES_AT_ONCE = 2

K = TypeVar("K")
V = TypeVar("V")


class RefreshingCache(Generic[K, V]):
    def __init__(
        self,
        name: str,
        lifetime: Callable[[], float],
        load: Callable[[K], Awaitable[V]],
        keep: Callable[[V], bool] = lambda _value: True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`lifetime` is read at each fetch, so a setting (or a test) can change it; `keep` says whether a
        loaded value is cached at all (a site not found yet may be created in a moment)."""
        self._name = name
        self._lifetime = lifetime
        self._load = load
        self._keep = keep
        self._clock = clock
        self._entries: dict[K, tuple[float, V]] = {}
        self._loading: dict[K, asyncio.Future[V]] = {}
        # Bumped by every `forget`: a fetch that started before the change must not cache what it read.
        self._generation = 0
        self._refreshes = asyncio.Semaphore(REFRESHES_AT_ONCE)

    async def get(self, key: K) -> V:
        cached = self._entries.get(key)
        if cached is not None:
            if cached[0] <= self._clock():
                self._fetch(key, refresh=True)
            return cached[1]
        # Shielded: one caller giving up (its socket closed) must not cancel the fetch the others wait on.
        return await asyncio.shield(self._fetch(key))

    def put(self, key: K, value: V) -> None:
        """A value just read from the store for another reason: callers need not fetch it again."""
        if self._keep(value):
            self._entries[key] = (self._expiry(), value)

    def forget(self, key: K) -> None:
        """Drop one entry (it changed here): the next `get` waits for the store."""
        self._generation += 1
        self._entries.pop(key, None)
        self._loading.pop(key, None)

    def _fetch(self, key: K, refresh: bool = False) -> asyncio.Future[V]:
        """The fetch in flight for this key, started if there is none: one at a time per key."""
        loading = self._loading.get(key)
        if loading is None:
            loading = asyncio.ensure_future(self._load_and_keep(key, refresh))
            self._loading[key] = loading
            loading.add_done_callback(functools.partial(self._fetched, key))
        return loading

    async def _load_and_keep(self, key: K, refresh: bool) -> V:
        generation = self._generation
        this_fetch = asyncio.current_task()
        try:
            if refresh:
                async with self._refreshes:
                    value = await self._load(key)
            else:
                value = await self._load(key)
        finally:
            # Here rather than in a done callback, a loop turn later: a caller that saw this fetch end
            # (it failed) must be able to start the next one at once.
            if self._loading.get(key) is this_fetch:
                self._loading.pop(key)
        if generation == self._generation and self._keep(value):
            self._entries[key] = (self._expiry(), value)
        return value

    def _expiry(self) -> float:
        return self._clock() + self._lifetime() * random.uniform(0.5, 1.0)

    def _fetched(self, key: K, done: asyncio.Future[V]) -> None:
        if not done.cancelled() and done.exception() is not None and key in self._entries:
            # A refresh nobody waits for: the old value keeps serving and the next call tries again.
            log.warning("refreshing %s %r failed: %s", self._name, key, done.exception())

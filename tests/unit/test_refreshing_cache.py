"""RefreshingCache: an expired entry answers at once and is refreshed behind, one fetch per key; entries
cached together do not expire together."""

from __future__ import annotations

import asyncio
import logging

import pytest

from nameplate.infra.refreshing_cache import REFRESHES_AT_ONCE, RefreshingCache


class Store:
    """A loader that counts its calls and, when told to, holds them until released."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.calls: list[str] = []
        self.gate: asyncio.Event | None = None
        self.fail = False
        self.finished = 0
        self._finish = asyncio.Event()

    async def load(self, key: str) -> str:
        self.calls.append(key)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.fail:
                raise RuntimeError("store unavailable")
            return self.values.get(key, "")
        finally:
            self.finished += 1
            self._finish.set()

    async def finished_count(self, count: int) -> None:
        """Until `count` loads have ended. The cache keeps (or drops) what a load read in the same step
        as the load returns, before any waiter runs."""
        async with asyncio.timeout(5):
            while self.finished < count:
                self._finish.clear()
                await self._finish.wait()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(store: Store, clock: Clock, lifetime: float = 10.0, **kwargs) -> RefreshingCache[str, str]:
    return RefreshingCache("thing", lambda: lifetime, store.load, clock=clock, **kwargs)


async def test_the_first_lookup_waits_and_later_ones_are_served_from_the_cache() -> None:
    store, clock = Store(), Clock()
    cache = make(store, clock)
    store.values["a"] = "one"
    assert await cache.get("a") == "one"
    store.values["a"] = "two"
    clock.now += 4.9  # under the shortest lifetime (half of 10 s)
    assert await cache.get("a") == "one"
    assert store.calls == ["a"]


async def test_an_expired_entry_answers_at_once_while_one_fetch_refreshes_it() -> None:
    store, clock = Store(), Clock()
    cache = make(store, clock)
    store.values["a"] = "one"
    await cache.get("a")
    store.values["a"] = "two"
    store.gate = asyncio.Event()  # the store is slow now
    clock.now += 10.01
    # A hundred callers at once: none waits for the store, and only one query goes out.
    assert [await cache.get("a") for _ in range(100)] == ["one"] * 100
    await asyncio.sleep(0)  # the refresh task takes its first step
    assert store.calls == ["a", "a"] and store.finished == 1
    store.gate.set()
    await store.finished_count(2)
    assert await cache.get("a") == "two"
    assert store.calls == ["a", "a"]


async def test_callers_of_a_key_not_yet_cached_share_one_fetch() -> None:
    store, clock = Store(), Clock()
    cache = make(store, clock)
    store.values["a"] = "one"
    store.gate = asyncio.Event()
    waiting = [asyncio.create_task(cache.get("a")) for _ in range(20)]
    await asyncio.sleep(0)  # the callers start the fetch ...
    await asyncio.sleep(0)  # ... and it reaches the store
    assert store.calls == ["a"]
    waiting[0].cancel()  # one caller giving up does not cancel the fetch the others wait on
    store.gate.set()
    assert await asyncio.gather(*waiting[1:]) == ["one"] * 19
    assert store.calls == ["a"]


async def test_entries_cached_together_expire_spread_over_half_their_lifetime() -> None:
    store, clock = Store(), Clock()
    cache = make(store, clock)
    keys = [f"k{i}" for i in range(200)]
    for key in keys:
        await cache.get(key)
    start = clock.now
    refreshed_by: list[int] = []
    for offset in (4.99, 7.5, 10.01):
        clock.now = start + offset
        for key in keys:
            await cache.get(key)
        await asyncio.sleep(0)  # the refreshes start
        await store.finished_count(len(store.calls))
        # A key refreshed at 7.5 s lives at least 5 s more: it is not refreshed again at 10.01 s.
        refreshed_by.append(len(store.calls) - len(keys))
    # None before half the lifetime, about half by three quarters, all by the full lifetime.
    assert refreshed_by[0] == 0
    assert 40 < refreshed_by[1] < 160
    assert refreshed_by[2] == len(keys)


async def test_refreshes_take_turns_while_a_first_lookup_does_not_wait_behind_them() -> None:
    store, clock = Store(), Clock()
    cache = make(store, clock)
    keys = [f"k{i}" for i in range(10)]
    for key in keys:
        await cache.get(key)
    clock.now += 10.01
    store.gate = asyncio.Event()
    for key in keys:
        await cache.get(key)  # ten refreshes asked for
    await asyncio.sleep(0)
    assert len(store.calls) == len(keys) + REFRESHES_AT_ONCE
    first = asyncio.create_task(cache.get("new"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert store.calls[-1] == "new"  # went straight to the store
    store.gate.set()
    assert await first == ""
    await store.finished_count(2 * len(keys) + 1)
    assert sorted(store.calls[len(keys) :]) == sorted([*keys, "new"])


async def test_forgetting_a_key_drops_it_and_a_fetch_already_running_does_not_cache_its_old_read() -> None:
    store, clock = Store(), Clock()
    cache = make(store, clock)
    store.values["a"] = "one"
    await cache.get("a")
    clock.now += 10.01
    store.gate = asyncio.Event()
    assert await cache.get("a") == "one"  # starts a refresh that reads "one"
    await asyncio.sleep(0)
    assert store.calls == ["a", "a"]
    store.values["a"] = "two"
    cache.forget("a")  # the value changed here while the refresh was out
    store.gate.set()
    assert await cache.get("a") == "two"  # waits for the store, not for the stale refresh
    clock.now += 4.9
    assert await cache.get("a") == "two"


async def test_values_the_cache_is_told_not_to_keep_are_fetched_every_time() -> None:
    store, clock = Store(), Clock()
    cache = make(store, clock, keep=lambda value: value != "")
    assert await cache.get("missing") == ""
    store.values["missing"] = "created"
    assert await cache.get("missing") == "created"
    assert store.calls == ["missing", "missing"]


async def test_a_failed_refresh_keeps_serving_the_old_value_and_the_next_call_tries_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, clock = Store(), Clock()
    cache = make(store, clock)
    store.values["a"] = "one"
    await cache.get("a")
    clock.now += 10.01
    store.fail = True
    with caplog.at_level(logging.WARNING, logger="nameplate.cache"):
        assert await cache.get("a") == "one"
        await store.finished_count(2)
        await asyncio.sleep(0)  # the done callback that logs runs a turn after the fetch ends
    assert "refreshing thing 'a' failed: store unavailable" in caplog.text
    store.fail = False
    store.values["a"] = "two"
    assert await cache.get("a") == "one"
    await store.finished_count(3)
    assert await cache.get("a") == "two"


async def test_a_failed_first_lookup_reaches_its_caller_and_is_not_cached() -> None:
    store, clock = Store(), Clock()
    cache = make(store, clock)
    store.fail = True
    with pytest.raises(RuntimeError, match="store unavailable"):
        await cache.get("a")
    store.fail = False
    store.values["a"] = "one"
    assert await cache.get("a") == "one"


async def test_a_value_put_from_another_read_is_served_without_a_fetch() -> None:
    store, clock = Store(), Clock()
    cache = make(store, clock, keep=lambda value: value != "")
    cache.put("a", "read elsewhere")
    cache.put("b", "")  # not kept
    assert await cache.get("a") == "read elsewhere"
    assert await cache.get("b") == ""
    assert store.calls == ["b"]

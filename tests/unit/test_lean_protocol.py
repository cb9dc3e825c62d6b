"""The lean websocket protocol's inbox and write flag behave like the asyncio objects they replace."""

from __future__ import annotations

import asyncio

import pytest

from nameplate.realtime.lean_protocol import _Flag, _Inbox


async def test_inbox_hands_items_over_in_order_and_keeps_no_storage_when_empty() -> None:
    inbox = _Inbox()
    assert inbox.empty()
    inbox.put_nowait("connect")
    inbox.put_nowait("receive")
    assert not inbox.empty()
    assert await inbox.get() == "connect"
    assert await inbox.get() == "receive"
    assert inbox.empty()
    assert inbox._items is None


async def test_inbox_get_waits_for_the_next_put() -> None:
    inbox = _Inbox()
    getter = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)  # let the getter start waiting: this is the state under test, not a sync
    assert not getter.done()
    inbox.put_nowait({"type": "websocket.disconnect"})
    assert await asyncio.wait_for(getter, 1) == {"type": "websocket.disconnect"}


async def test_a_cancelled_get_loses_nothing() -> None:
    inbox = _Inbox()
    getter = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    getter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await getter
    assert inbox._waiter is None
    inbox.put_nowait("after")
    assert await asyncio.wait_for(inbox.get(), 1) == "after"


async def test_flag_wait_returns_at_once_while_set_and_blocks_while_cleared() -> None:
    flag = _Flag()
    assert flag.is_set()
    await asyncio.wait_for(flag.wait(), 1)
    flag.clear()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(2)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    flag.set()
    await asyncio.wait_for(asyncio.gather(*waiters), 1)
    assert flag._waiters is None

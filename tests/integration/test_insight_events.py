"""The insight event timeline is written with the changes it records, by both store engines."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from nameplate.insight.events import EventKind
from nameplate.store.message_log.log import NewMessage
from nameplate.store.models import AuthorKind, InsightEvent
from tests.integration.test_store_engines import Store, store  # noqa: F401  (the two-engine fixture)


async def events_of(store: Store, conversation_id: str) -> list[InsightEvent]:  # noqa: F811
    async with store.services.sessions() as session:
        result = await session.execute(
            select(InsightEvent).where(InsightEvent.conversation_id == conversation_id).order_by(InsightEvent.id)
        )
        return list(result.scalars())


async def test_a_served_transferred_rated_chat_leaves_its_timeline(store: Store) -> None:  # noqa: F811
    conversations = store.services.conversations
    jane, tomas = store.agents
    conversation = await store.conversation()
    visitor_first = await store.log.append(NewMessage(conversation.id, AuthorKind.visitor.value, "where is my order"))
    assigned = await conversations.mark_assigned(conversation.id, jane.id)
    assert assigned is not None
    await store.log.append(
        NewMessage(conversation.id, AuthorKind.agent.value, "a note", agent_id=jane.id, private=True)
    )
    reply = await store.log.append(NewMessage(conversation.id, AuthorKind.agent.value, "Hi!", agent_id=jane.id))
    await store.log.append(NewMessage(conversation.id, AuthorKind.agent.value, "Checking", agent_id=jane.id))
    assert await conversations.hand_over(conversation.id, jane.id, tomas.id)
    assert await conversations.close(await store.reload(conversation.id), "Tomas")
    await conversations.rate(await store.reload(conversation.id), 5, "great")

    events = await events_of(store, conversation.id)
    assert [(e.kind, e.agent_id) for e in events] == [
        (EventKind.queued, None),
        (EventKind.assigned, jane.id),
        (EventKind.first_reply, jane.id),
        (EventKind.transfer, jane.id),
        (EventKind.assigned, tomas.id),
        (EventKind.closed, tomas.id),
        (EventKind.rated, tomas.id),
    ]
    by_kind = {e.kind: e for e in events}
    assert by_kind[EventKind.transfer].detail == tomas.id
    assert by_kind[EventKind.rated].value == 5.0
    # Measured from the conversation's opening, which the visitor's first message causes (just before it).
    expected_first = (reply.created_at - conversation.created_at).total_seconds()
    assert by_kind[EventKind.first_reply].value == pytest.approx(expected_first, abs=0.001)
    assert conversation.created_at <= visitor_first.created_at
    assert events[1].value is not None and events[1].value >= 0  # the wait before Jane
    assert events[4].value is None  # a hand-over is no wait in the queue
    # Only the first public agent message counts: one first_reply event, never two.
    assert sum(e.kind == EventKind.first_reply for e in events) == 1


async def test_a_requeue_to_a_team_and_an_abandon_are_recorded(store: Store) -> None:  # noqa: F811
    conversations = store.services.conversations
    jane = store.agents[0]
    conversation = await store.conversation()
    await conversations.mark_assigned(conversation.id, jane.id)
    assert await conversations.mark_requeued(conversation.id, team_id=store.team.id, transferred_by=jane.id)
    left_at = (await events_of(store, conversation.id))[-1].at
    abandoned = await conversations.abandon(conversation.id, "https://shop.example/cart", left_at)
    assert abandoned is not None and abandoned.status == "closed"
    assert await conversations.abandon(conversation.id, None, left_at) is None  # no longer queued: nothing twice
    events = await events_of(store, conversation.id)
    assert [(e.kind, e.team_id) for e in events] == [
        (EventKind.queued, None),
        (EventKind.assigned, None),
        (EventKind.transfer, store.team.id),
        (EventKind.queued, store.team.id),
        (EventKind.left, store.team.id),
        (EventKind.closed, store.team.id),
    ]
    assert events[4].detail == "https://shop.example/cart" and events[4].value == 0.0
    assert events[2].detail == f"team:{store.team.id}"

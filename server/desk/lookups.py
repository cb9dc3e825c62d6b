"""What the agent console looks up beyond the live socket: customer cards and profiles, recently closed chats.

Every look-up takes the agent's site: an id from another site is 'not found', never a leak.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlmodel import col

from nameplate.errors import NotFound
from nameplate.people.customers import Customers, customer_card, display_name
from nameplate.people.timeline import Timeline, conversations_with_agent_and_rating
from nameplate.store.engine import Sessions
from nameplate.store.models import Agent, Conversation, ConversationStatus, Customer, Rating, iso

# Enough to recognise a regular; the transcript pages hold the rest.
PREVIOUS_CONVERSATIONS = 20
RECENTLY_CLOSED = 15
TIMELINE_EVENTS = 30


class ConsoleLookups:
    def __init__(self, sessions: Sessions, customers: Customers, timeline: Timeline) -> None:
        self._sessions = sessions
        self._customers = customers
        self._timeline = timeline

    # -- customers -----------------------------------------------------------------------------------
    async def customer_in_site(self, customer_id: str, site_id: str) -> Customer:
        customer = await self._customers.get(customer_id)
        if customer is None or customer.site_id != site_id:
            raise NotFound("no such customer")
        return customer

    async def customer_profile(self, customer_id: str, site_id: str) -> dict[str, Any]:
        """The console's customer sidebar: the card, this visit's pages, and earlier conversations."""
        customer = await self.customer_in_site(customer_id, site_id)
        return {
            "customer": {**customer_card(customer), "display_name": display_name(customer)},
            "pages": await self._customers.recent_pages(customer.id),
            "conversations": await self._conversations_of(customer.id),
            # Calls, store visits, e-mails posted through the events API: shown beside the chats.
            "events": [
                item
                for item in await self._timeline.items(customer.id, limit=TIMELINE_EVENTS)
                if item["kind"] == "event"
            ],
        }

    async def _conversations_of(self, customer_id: str) -> list[dict[str, Any]]:
        async with self._sessions() as session:
            rows = await conversations_with_agent_and_rating(session, customer_id, PREVIOUS_CONVERSATIONS)
        return [self._conversation_row(conversation, agent, rating) for conversation, agent, rating in rows]

    # -- conversations -------------------------------------------------------------------------------
    async def recently_closed(self, agent_id: str) -> list[dict[str, Any]]:
        """The agent's own latest closed chats, newest first."""
        async with self._sessions() as session:
            rows = (
                await session.execute(
                    select(Conversation, Customer, Rating)
                    .join(Customer, col(Customer.id) == col(Conversation.customer_id))
                    .outerjoin(Rating, col(Rating.conversation_id) == col(Conversation.id))
                    .where(
                        col(Conversation.agent_id) == agent_id,
                        col(Conversation.status) == ConversationStatus.closed,
                    )
                    .order_by(col(Conversation.closed_at).desc())
                    .limit(RECENTLY_CLOSED)
                )
            ).all()
        return [
            {
                **self._conversation_row(conversation, None, rating),
                "customer": {"id": customer.id, "name": customer.name, "display_name": display_name(customer)},
            }
            for conversation, customer, rating in rows
        ]

    @staticmethod
    def _conversation_row(conversation: Conversation, agent: Agent | None, rating: Rating | None) -> dict[str, Any]:
        return {
            "id": conversation.id,
            "status": conversation.status,
            "created_at": iso(conversation.created_at),
            "closed_at": iso(conversation.closed_at),
            "messages": conversation.last_seq,
            "agent": {"id": agent.id, "name": agent.full_name} if agent else None,
            "rating": {"score": rating.score, "comment": rating.comment} if rating else None,
        }

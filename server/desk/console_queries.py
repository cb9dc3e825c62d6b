"""What the agent console reads and edits beyond the live socket: customer cards, closed chats, profiles.

Every look-up takes the agent's site: an id from another site is 'not found', never a leak.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from nameplate.errors import NameplateError, NotFound
from nameplate.people.customers import Customers, customer_card, display_name
from nameplate.people.directory import clean_name
from nameplate.people.timeline import Timeline, conversations_with_agent_and_rating
from nameplate.protocol.vocabulary import ErrorCode
from nameplate.store.engine import Sessions
from nameplate.store.models import Agent, Conversation, ConversationStatus, Customer, Rating, iso

# Enough to recognise a regular; the transcript pages hold the rest.
PREVIOUS_CONVERSATIONS = 20
RECENTLY_CLOSED = 15
MAX_TITLE_CHARS = 120
MAX_INTRO_CHARS = 280


def clean_line(value: str | None, field: str, limit: int) -> str:
    """An optional one-line text: whitespace folded, length checked (said, not silently cut)."""
    cleaned = " ".join((value or "").split())
    if len(cleaned) > limit:
        raise NameplateError(ErrorCode.invalid, f"{field} is limited to {limit} characters")
    return cleaned


TIMELINE_EVENTS = 30


class ConsoleQueries:
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
                    .join(Customer, Customer.id == Conversation.customer_id)
                    .outerjoin(Rating, Rating.conversation_id == Conversation.id)
                    .where(
                        Conversation.agent_id == agent_id,
                        Conversation.status == ConversationStatus.closed,
                    )
                    .order_by(Conversation.closed_at.desc())
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

    # -- the agent's own profile ---------------------------------------------------------------------
    async def update_profile(
        self, agent_id: str, *, given_name: str, family_name: str, title: str, intro: str
    ) -> Agent:
        """Names are required (a real person, by name); title and intro are optional one-liners.

        The caller drops the directory's cached card, so messages and the widget show the change.
        """
        values = {
            "given_name": clean_name(given_name, "given name"),
            "family_name": clean_name(family_name, "family name"),
            "title": clean_line(title, "title", MAX_TITLE_CHARS),
            "intro": clean_line(intro, "intro", MAX_INTRO_CHARS),
        }
        async with self._sessions() as session:
            await session.execute(update(Agent).where(Agent.id == agent_id).values(**values))
            await session.commit()
            agent = await session.get(Agent, agent_id, populate_existing=True)
        if agent is None:
            raise NotFound("no such agent")
        return agent

"""Small copies of the few fields of a customer or conversation record that a visitor's socket keeps.

A visitor session lives as long as its socket — hours, for most of them idle — and an ORM object with
its SQLAlchemy instance state and pydantic bookkeeping costs about 1 KiB; two of them were a tenth of an
idle socket's memory. A session keeps these views instead and asks the store when it needs more.
"""

from __future__ import annotations

from dataclasses import dataclass

from nameplate.store.models import Conversation, Customer


@dataclass(slots=True)
class CustomerView:
    id: str
    name: str | None
    verified: bool

    @classmethod
    def of(cls, customer: Customer) -> CustomerView:
        return cls(customer.id, customer.name, customer.verified)


@dataclass(slots=True)
class ConversationView:
    """Kept current by the session from its conversation's events (joined, left, closed)."""

    id: str
    site_id: str
    customer_id: str
    status: str
    agent_id: str | None

    @classmethod
    def of(cls, conversation: Conversation) -> ConversationView:
        return cls(
            conversation.id, conversation.site_id, conversation.customer_id, conversation.status, conversation.agent_id
        )

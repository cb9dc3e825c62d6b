"""A customer's timeline across channels: chats and events from elsewhere (calls, store visits, e-mail)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from nameplate.errors import NameplateError
from nameplate.protocol.vocabulary import ErrorCode
from nameplate.store.engine import Sessions
from nameplate.store.models import Agent, Conversation, Customer, CustomerEvent, Rating, iso

CHANNELS = ("phone", "store", "email", "web", "social", "other")
MAX_PAGE = 100


class FieldErrors(NameplateError):
    """422 with a message per field, so an API client can fix each one."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__(ErrorCode.invalid, "; ".join(f"{k}: {v}" for k, v in fields.items()), 422)
        self.fields = fields


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def validate_event(data: dict[str, Any]) -> dict[str, Any]:
    errors: dict[str, str] = {}
    event_id = data.get("event_id")
    if not isinstance(event_id, str) or not 1 <= len(event_id.strip()) <= 100:
        errors["event_id"] = "required: your own id for this event, 1–100 characters"
    channel = data.get("channel")
    if channel not in CHANNELS:
        errors["channel"] = f"must be one of {', '.join(CHANNELS)}"
    summary = data.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        errors["summary"] = "required"
    elif len(summary) > 500:
        errors["summary"] = "at most 500 characters"
    details = data.get("details", "")
    if details is not None and (not isinstance(details, str) or len(details) > 5000):
        errors["details"] = "a string of at most 5000 characters"
    agent_email = data.get("agent_email")
    if agent_email is not None and (
        not isinstance(agent_email, str) or "@" not in agent_email or len(agent_email) > 254
    ):
        errors["agent_email"] = "must be an e-mail address"
    occurred_at = _parse_time(data.get("occurred_at"))
    if occurred_at is None:
        errors["occurred_at"] = "required: an ISO-8601 time, e.g. 2026-11-22T15:04:05Z"
    elif occurred_at > datetime.now(UTC) + timedelta(days=1):
        errors["occurred_at"] = "cannot be in the future"
    if errors:
        raise FieldErrors(errors)
    return {
        "event_id": event_id.strip(),  # type: ignore[union-attr]
        "channel": channel,
        "summary": " ".join(summary.split()),  # type: ignore[union-attr]
        "details": details or "",
        "agent_email": agent_email,
        "occurred_at": occurred_at,
    }


async def conversations_with_agent_and_rating(
    session: Any, customer_id: str, limit: int
) -> list[tuple[Conversation, Agent | None, Rating | None]]:
    """A customer's conversations, newest first, each with its agent and rating (or None)."""
    rows = await session.execute(
        select(Conversation, Agent, Rating)
        .outerjoin(Agent, col(Agent.id) == col(Conversation.agent_id))
        .outerjoin(Rating, col(Rating.conversation_id) == col(Conversation.id))
        .where(col(Conversation.customer_id) == customer_id)
        .order_by(col(Conversation.created_at).desc())
        .limit(limit)
    )
    return [(conversation, agent, rating) for conversation, agent, rating in rows.all()]


def event_item(event: CustomerEvent) -> dict[str, Any]:
    return {
        "kind": "event",
        "id": event.id,
        "event_id": event.event_id,
        "channel": event.channel,
        "summary": event.summary,
        "details": event.details,
        "agent_email": event.agent_email,
        "at": iso(event.occurred_at),
    }


class Timeline:
    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    async def customer_by_external_id(self, site_id: str, external_id: str) -> Customer | None:
        async with self._sessions() as session:
            result = await session.execute(
                select(Customer).where(col(Customer.site_id) == site_id, col(Customer.external_id) == external_id)
            )
            return result.scalar_one_or_none()

    async def record(self, customer: Customer, data: dict[str, Any]) -> tuple[CustomerEvent, bool]:
        """Store an event; (event, created). A repeated event_id returns the stored one, unchanged."""
        fields = validate_event(data)
        async with self._sessions() as session:
            existing = await self._existing(session, customer.site_id, fields["event_id"])
            if existing is not None:
                return existing, False
            event = CustomerEvent(site_id=customer.site_id, customer_id=customer.id, **fields)
            session.add(event)
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()
                existing = await self._existing(session, customer.site_id, fields["event_id"])
                if existing is None:
                    raise
                return existing, False
        return event, True

    @staticmethod
    async def _existing(session: AsyncSession, site_id: str, event_id: str) -> CustomerEvent | None:
        result = await session.execute(
            select(CustomerEvent).where(col(CustomerEvent.site_id) == site_id, col(CustomerEvent.event_id) == event_id)
        )
        return result.scalar_one_or_none()

    async def items(self, customer_id: str, limit: int = 20, offset: int = 0) -> list[dict[str, Any]]:
        """Conversations and events merged, newest first."""
        limit = max(1, min(limit, MAX_PAGE))
        offset = max(0, offset)
        window = limit + offset
        async with self._sessions() as session:
            events = list(
                (
                    await session.execute(
                        select(CustomerEvent)
                        .where(col(CustomerEvent.customer_id) == customer_id)
                        .order_by(col(CustomerEvent.occurred_at).desc())
                        .limit(window)
                    )
                ).scalars()
            )
            chats = await conversations_with_agent_and_rating(session, customer_id, window)
        items = [event_item(e) for e in events] + [
            {
                "kind": "conversation",
                "id": conversation.id,
                "status": conversation.status,
                "agent": agent.full_name if agent else None,
                "rating": rating.score if rating else None,
                "at": iso(conversation.created_at),
            }
            for conversation, agent, rating in chats
        ]
        items.sort(key=lambda item: item["at"] or "", reverse=True)
        return items[offset:window]

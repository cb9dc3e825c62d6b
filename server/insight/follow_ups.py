"""The one-click follow-up to a visitor who gave up waiting: a short apology from a named person."""

from __future__ import annotations

from sqlalchemy import select
from sqlmodel import col

from nameplate.errors import NameplateError, NotFound
from nameplate.insight import events as insight_events
from nameplate.insight.mailing import Outbox, OutgoingMail, send
from nameplate.insight.metrics import Event, facts_of
from nameplate.people.directory import Directory
from nameplate.protocol.vocabulary import ErrorCode, EventKind
from nameplate.store.engine import Sessions
from nameplate.store.models import Agent, Conversation, Customer, InsightEvent


class FollowUps:
    def __init__(self, sessions: Sessions, directory: Directory, outbox: Outbox) -> None:
        self._sessions = sessions
        self._directory = directory
        self._outbox = outbox

    async def send(self, viewer: Agent, conversation_id: str, sender_id: str | None = None) -> OutgoingMail:
        """Mail the visitor of an abandoned conversation of the viewer's site, from the viewer or a chosen
        colleague; once per conversation."""
        sender = viewer
        if sender_id and sender_id != viewer.id:
            chosen = await self._directory.agent(sender_id)
            if chosen is None or chosen.site_id != viewer.site_id or not chosen.active:
                raise NotFound("no such colleague")
            sender = chosen
        site = await self._directory.site(viewer.site_id)
        async with self._sessions() as session:
            conversation = await session.get(Conversation, conversation_id)
            if conversation is None or conversation.site_id != viewer.site_id:
                raise NotFound("no such conversation")
            rows = await session.execute(
                select(InsightEvent)
                .where(col(InsightEvent.conversation_id) == conversation_id)
                .order_by(col(InsightEvent.id))
            )
            events = [Event.of(row) for row in rows.scalars()]
            facts = facts_of(events)
            if facts is None or not facts.abandoned:
                raise NameplateError(
                    ErrorCode.not_abandoned, "only a visitor who gave up waiting gets this follow-up", 409
                )
            if any(e.kind == EventKind.emailed for e in events):
                raise NameplateError(ErrorCode.already_sent, "this visitor has already been followed up", 409)
            customer = await session.get(Customer, conversation.customer_id)
            address = conversation.offline_email or (customer.email if customer else None)
            if not address:
                raise NameplateError(ErrorCode.no_email, "this visitor left no e-mail address", 409)
            # The greeting uses the visitor's name when they gave one ("Hello," otherwise).
            name = customer.name if customer and customer.name else None
            when = facts.left_at.strftime("%d %B at %H:%M UTC") if facts.left_at else "earlier"
            where = f" on {facts.page}" if facts.page else ""
            mail = await send(
                self._outbox,
                session,
                OutgoingMail(
                    to=address,
                    subject=f"Sorry we missed you — {site.name}",
                    text=(
                        f"You were waiting to chat with us{where} ({when}) and had to leave before one of us "
                        "could answer. Sorry to have kept you waiting.\n\nIf you still need help, just reply to "
                        "this e-mail: it comes straight to me."
                    ),
                    from_name=f"{sender.full_name} ({site.name})",
                    site_id=conversation.site_id,
                    conversation_id=conversation.id,
                    agent_id=sender.id,
                    to_name=name,
                    category="follow_up",
                ),
            )
            insight_events.record(
                session,
                EventKind.emailed,
                conversation_id,
                conversation.site_id,
                team_id=conversation.team_id,
                agent_id=sender.id,
            )
            # The mail row and the `emailed` event are one transaction: both or neither.
            await session.commit()
        self._outbox.wake()
        return mail

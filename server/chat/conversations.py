"""Conversations: start, post, read, close, rate, transfer in the store — store first, then publish.

The frames published here are exactly what sockets forward, so the realtime layer only moves them.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, select, update
from sqlmodel import col

from nameplate.broker.base import Broker
from nameplate.errors import Forbidden, NameplateError, NotFound
from nameplate.insight import events as insight
from nameplate.integrations.webhooks import Webhooks
from nameplate.people.customers import customer_card, display_name
from nameplate.people.directory import Directory
from nameplate.protocol import channels, outbound
from nameplate.protocol.vocabulary import ErrorCode, EventKind, Side, Visibility, visible_to_visitor
from nameplate.store.engine import Sessions
from nameplate.store.message_log.log import MessageLog, NewMessage, StoredMessage
from nameplate.store.models import (
    AuthorKind,
    Conversation,
    ConversationStatus,
    Customer,
    Message,
    Rating,
    iso,
    utcnow,
)
from nameplate.store.views import ConversationView, CustomerView


def message_frame(stored: StoredMessage | Message, author: dict[str, Any]) -> dict[str, Any]:
    return outbound.message(
        stored.conversation_id,
        stored.seq,
        author,
        stored.body,
        stored.private,
        stored.client_id,
        iso(stored.created_at),
        kind_of(stored),
    )


def kind_of(message: StoredMessage | Message) -> str:
    """A message's visibility; a private row without one (written before visibility existed) is a note."""
    if message.private and message.visibility == Visibility.public:
        return Visibility.note
    return message.visibility


def for_visitor(message: StoredMessage | Message) -> bool:
    """May this message leave the desk (the visitor's socket, webhooks, e-mail)? Notes and whispers never."""
    return not message.private and visible_to_visitor(kind_of(message))


def visitor_visible_rows() -> ColumnElement[bool]:
    """`for_visitor` in SQL: the condition every query that feeds the visitor (or the outside) adds."""
    return and_(col(Message.private).is_(False), col(Message.visibility) == Visibility.public)


VISITOR_AUTHOR_KIND = AuthorKind.visitor

log = logging.getLogger("nameplate.chat")


class Conversations:
    def __init__(
        self,
        sessions: Sessions,
        log: MessageLog,
        broker: Broker,
        directory: Directory,
        max_chars: int,
        webhooks: Webhooks,
    ) -> None:
        self._webhooks = webhooks
        self._sessions = sessions
        self._log = log
        self._broker = broker
        self._directory = directory
        self._max_chars = max_chars

    # -- reading -------------------------------------------------------------------------------------
    async def get(self, conversation_id: str) -> Conversation | None:
        async with self._sessions() as session:
            return await session.get(Conversation, conversation_id)

    async def get_in_site(self, conversation_id: str, site_id: str) -> Conversation:
        """Every id that comes from a client is checked against its site: another site's id is 'not found'."""
        conversation = await self.get(conversation_id)
        if conversation is None or conversation.site_id != site_id:
            raise NotFound("no such conversation")
        return conversation

    async def open_for_customer(self, customer_id: str) -> Conversation | None:
        async with self._sessions() as session:
            result = await session.execute(
                select(Conversation)
                .where(
                    col(Conversation.customer_id) == customer_id,
                    col(Conversation.status) != ConversationStatus.closed,
                )
                .order_by(col(Conversation.created_at).desc())
                .limit(1)
            )
            return result.scalar_one_or_none()

    async def find_sent(self, customer_id: str, client_id: str) -> Message | None:
        """A message this customer already sent with this client_id, in any of their conversations: a
        resend that crossed a close must be acknowledged, not stored again in a new conversation."""
        async with self._sessions() as session:
            result = await session.execute(
                select(Message)
                .join(Conversation, col(Conversation.id) == col(Message.conversation_id))
                .where(
                    col(Conversation.customer_id) == customer_id,
                    col(Message.client_id) == client_id,
                    col(Message.author_kind) == AuthorKind.visitor,  # the visitor's own key, not an agent's
                )
                .order_by(col(Message.created_at).desc())
                .limit(1)
            )
            return result.scalar_one_or_none()

    async def for_agent(self, agent_id: str) -> list[Conversation]:
        async with self._sessions() as session:
            result = await session.execute(
                select(Conversation)
                .where(col(Conversation.agent_id) == agent_id, col(Conversation.status) == ConversationStatus.active)
                .order_by(col(Conversation.assigned_at))
            )
            return list(result.scalars())

    async def with_status(self, status: ConversationStatus, site_id: str | None = None) -> list[Conversation]:
        query = select(Conversation).where(col(Conversation.status) == status.value)
        if site_id is not None:
            query = query.where(col(Conversation.site_id) == site_id)
        async with self._sessions() as session:
            return list((await session.execute(query.order_by(col(Conversation.created_at)))).scalars())

    async def previous_agent_id(self, customer_id: str, excluding: str | None = None) -> str | None:
        """The agent who last helped this customer: a returning customer goes to them first."""
        query = select(col(Conversation.agent_id)).where(
            col(Conversation.customer_id) == customer_id, col(Conversation.agent_id).is_not(None)
        )
        if excluding is not None:
            query = query.where(col(Conversation.id) != excluding)
        async with self._sessions() as session:
            result = await session.execute(query.order_by(col(Conversation.created_at).desc()).limit(1))
            return result.scalar_one_or_none()

    async def earlier(self, customer_id: str, limit: int = 5) -> list[dict[str, Any]]:
        """A customer's closed conversations, newest first, with who helped and the last words."""
        async with self._sessions() as session:
            result = await session.execute(
                select(Conversation)
                .where(
                    col(Conversation.customer_id) == customer_id, col(Conversation.status) == ConversationStatus.closed
                )
                .order_by(col(Conversation.created_at).desc())
                .limit(limit)
            )
            conversations = list(result.scalars())
            items = []
            for conversation in conversations:
                last = (
                    await session.execute(
                        select(col(Message.body))
                        .where(
                            col(Message.conversation_id) == conversation.id,
                            visitor_visible_rows(),
                            col(Message.author_kind) != AuthorKind.system,
                        )
                        .order_by(col(Message.seq).desc())
                        .limit(1)
                    )
                ).scalar_one_or_none()
                rating = await session.get(Rating, conversation.id)
                items.append(
                    {
                        "id": conversation.id,
                        "agent": await self._directory.card(conversation.agent_id) if conversation.agent_id else None,
                        "created_at": iso(conversation.created_at),
                        "closed_at": iso(conversation.closed_at),
                        "last_message": (last or "")[:200],
                        "rating": rating.score if rating else None,
                    }
                )
        return items

    async def summary(self, conversation: Conversation) -> dict[str, Any]:
        """A conversation as the console lists it."""
        async with self._sessions() as session:
            customer = await session.get(Customer, conversation.customer_id)
        agent = await self._directory.card(conversation.agent_id) if conversation.agent_id else None
        previous_id = await self.previous_agent_id(conversation.customer_id, excluding=conversation.id)
        return {
            "id": conversation.id,
            "previous_agent": await self._directory.card(previous_id) if previous_id else None,
            "status": conversation.status,
            "team_id": conversation.team_id,
            "customer": customer_card(customer) if customer else None,
            "agent": agent,
            "created_at": iso(conversation.created_at),
            "assigned_at": iso(conversation.assigned_at),
            "closed_at": iso(conversation.closed_at),
            "last_seq": conversation.last_seq,
            "visitor_read_seq": conversation.visitor_read_seq,
            "agent_read_seq": conversation.agent_read_seq,
            # Left with an offline message: the console offers "reply by e-mail" to it.
            "offline_email": conversation.offline_email,
        }

    async def history(
        self, conversation_id: str, after_seq: int = 0, include_private: bool = False
    ) -> list[dict[str, Any]]:
        """Message frames with seq > after_seq, in order: the replay a reconnecting client receives."""
        query = select(Message).where(col(Message.conversation_id) == conversation_id, col(Message.seq) > after_seq)
        if not include_private:
            query = query.where(visitor_visible_rows())
        async with self._sessions() as session:
            messages = list((await session.execute(query.order_by(col(Message.seq)))).scalars())
            conversation = await session.get(Conversation, conversation_id)
            customer = await session.get(Customer, conversation.customer_id) if conversation else None
        visitor = self.visitor_author(customer)
        frames = []
        for message in messages:
            frames.append(message_frame(message, await self._author(message.author_kind, message.agent_id, visitor)))
        return frames

    async def _author(self, kind: str, agent_id: str | None, visitor: dict[str, Any]) -> dict[str, Any]:
        if kind == AuthorKind.agent and agent_id:
            return {"kind": kind, **(await self._directory.card(agent_id))}
        if kind == AuthorKind.visitor:
            return visitor
        return {"kind": kind}

    @staticmethod
    def visitor_author(customer: Customer | CustomerView | None) -> dict[str, Any]:
        return {"kind": VISITOR_AUTHOR_KIND, "name": display_name(customer) if customer else "Visitor"}

    # -- writing -------------------------------------------------------------------------------------
    def clean_body(self, body: str) -> str:
        cleaned = body.strip()
        if not cleaned:
            raise NameplateError(ErrorCode.empty, "a message needs some text")
        if len(cleaned) > self._max_chars:
            raise NameplateError(ErrorCode.too_large, f"messages are limited to {self._max_chars} characters")
        return cleaned

    async def start(self, site_id: str, customer_id: str, team_id: str | None = None) -> Conversation:
        conversation = Conversation(site_id=site_id, customer_id=customer_id, team_id=team_id)
        async with self._sessions() as session:
            session.add(conversation)
            insight.record(
                session, EventKind.queued, conversation.id, site_id, team_id=team_id, at=conversation.created_at
            )
            await session.commit()
        # Committed: from here on a broker failure is told, not raised (the visitor's message still goes
        # in; the board and other tabs catch up from the store).
        await self.publish_committed(
            channels.customer(customer_id), outbound.customer_conversation_event(conversation.id)
        )
        summary = await self.summary(conversation)
        await self.publish_committed(channels.site(site_id), outbound.conversation(summary))
        await self._webhooks.emit(site_id, "conversation.created", summary)
        return conversation

    async def publish_committed(self, channel: str, event: dict[str, Any]) -> None:
        """Publish news of something the store already committed. This process's sockets have it either
        way; if the broker fails, the others are re-synced from the store once it is back."""
        try:
            await self._broker.fanout.publish(channel, event)
        except Exception as error:
            log.warning(
                "publishing %s on %s failed (%s); sockets re-sync from the store", event["type"], channel, error
            )

    async def announce(self, conversation: Conversation) -> dict[str, Any]:
        """Tell the site's live board (inboxes, supervisors) what a conversation looks like now."""
        summary = await self.summary(conversation)
        await self._broker.fanout.publish(channels.site(conversation.site_id), outbound.conversation(summary))
        return summary

    async def post(self, message: NewMessage, author: dict[str, Any], site_id: str | None = None) -> StoredMessage:
        """Store, then publish (see `publish`)."""
        stored = await self.store(message)
        await self.publish(stored, author, site_id)
        return stored

    async def store(self, message: NewMessage) -> StoredMessage:
        """Store only; returns once committed. A sender's socket publishes with its own frames corked."""
        return await self._log.append(message)

    async def publish(self, stored: StoredMessage, author: dict[str, Any], site_id: str | None = None) -> None:
        """Send a stored message to whoever follows it (see `deliver`); with `site_id`, public messages also
        go to the site's webhooks."""
        frame = self.deliver(stored, author)
        if frame is not None and site_id is not None:
            await self.tell_webhooks(site_id, stored, frame)

    def deliver(self, stored: StoredMessage, author: dict[str, Any]) -> dict[str, Any] | None:
        """Send a stored message to whoever follows its conversation: this process's sockets at once, the
        other processes' through the broker without waiting for it, so a sender's ack can follow at once.
        Returns the frame, or None for a duplicate client_id (a retried send).

        A duplicate is published again: the original may never have been (the process died between the
        commit and the fan-out, or Redis dropped it). Sockets that had it drop the copy (they deliver each
        seq once); the webhooks were told with the original, so the caller does not tell them again."""
        frame = message_frame(stored, author)
        # The visitor follows the conversation channel; notes and whispers go only to the staff channel.
        channel = channels.conversation if for_visitor(stored) else channels.staff
        self._broker.fanout.publish_soon(channel(stored.conversation_id), frame)
        return None if stored.duplicate else frame

    async def tell_webhooks(self, site_id: str, stored: StoredMessage, frame: dict[str, Any]) -> None:
        """Record `message.created` for the site's webhooks; private notes and whispers stay inside."""
        if for_visitor(stored):
            await self._webhooks.emit(site_id, "message.created", {k: v for k, v in frame.items() if k != "type"})

    async def system_line(self, conversation_id: str, body: str, private: bool = False) -> StoredMessage:
        return await self.post(
            NewMessage(conversation_id, AuthorKind.system, body, private=private, allow_closed=True),
            {"kind": AuthorKind.system},
        )

    async def mark_read(self, conversation_id: str, by: Side, seq: int) -> None:
        """`by` ("visitor" or "agent") has read up to `seq`. Capped at the conversation's last message as
        stored now — a session's copy of the conversation is as old as the session — and published only
        when it moves the mark forward."""
        column = col(Conversation.visitor_read_seq) if by == "visitor" else col(Conversation.agent_read_seq)
        upto = case((col(Conversation.last_seq) < seq, col(Conversation.last_seq)), else_=seq)
        async with self._sessions() as session:
            result = await session.execute(
                update(Conversation)
                .where(col(Conversation.id) == conversation_id, column < upto)
                .values({column: upto})
                .returning(column)
            )
            moved = result.scalar_one_or_none()
            await session.commit()
        if moved is not None:
            await self._broker.fanout.publish(
                channels.conversation(conversation_id),
                outbound.read(conversation_id, by, moved),
            )

    async def typing(self, conversation_id: str, by: Side, on: bool, name: str | None = None) -> None:
        await self._broker.fanout.publish(
            channels.conversation(conversation_id),
            outbound.typing(conversation_id, by, on, name),
        )

    async def mark_assigned(self, conversation_id: str, agent_id: str) -> Conversation | None:
        """queued → active with this agent. None if it is no longer queued (closed meanwhile)."""
        now = utcnow()
        async with self._sessions() as session:
            result = await session.execute(
                update(Conversation)
                .where(col(Conversation.id) == conversation_id, col(Conversation.status) == ConversationStatus.queued)
                .values(status=ConversationStatus.active, agent_id=agent_id, assigned_at=now)
                .returning(col(Conversation.site_id), col(Conversation.team_id))
            )
            changed = result.first()
            if changed is not None:
                await insight.record_assigned(session, conversation_id, changed[0], changed[1], agent_id, now)
            await session.commit()
            if changed is None:
                return None
            return await session.get(Conversation, conversation_id)

    async def mark_requeued(
        self, conversation_id: str, team_id: str | None = None, transferred_by: str | None = None
    ) -> bool:
        """active → queued; `transferred_by` is the agent who sent it to `team_id` (None: they went away)."""
        values: dict[str, Any] = {"status": ConversationStatus.queued, "agent_id": None}
        if team_id is not None:
            values["team_id"] = team_id
        async with self._sessions() as session:
            result = await session.execute(
                update(Conversation)
                .where(col(Conversation.id) == conversation_id, col(Conversation.status) == ConversationStatus.active)
                .values(**values)
                .returning(col(Conversation.site_id), col(Conversation.team_id))
            )
            changed = result.first()
            if changed is not None:
                if transferred_by is not None:
                    insight.record(
                        session, EventKind.transfer, conversation_id, changed[0], team_id=changed[1],
                        agent_id=transferred_by, detail=f"team:{team_id}",
                    )  # fmt: skip
                insight.record(session, EventKind.queued, conversation_id, changed[0], team_id=changed[1])
            await session.commit()
            return changed is not None

    async def hand_over(self, conversation_id: str, from_agent: str, to_agent: str) -> bool:
        async with self._sessions() as session:
            result = await session.execute(
                update(Conversation)
                .where(
                    col(Conversation.id) == conversation_id,
                    col(Conversation.agent_id) == from_agent,
                    col(Conversation.status) == ConversationStatus.active,
                )
                .values(agent_id=to_agent, assigned_at=utcnow())
                .returning(col(Conversation.site_id), col(Conversation.team_id))
            )
            changed = result.first()
            if changed is not None:
                site_id, team_id = changed
                insight.record(
                    session, EventKind.transfer, conversation_id, site_id, team_id=team_id, agent_id=from_agent,
                    detail=to_agent,
                )  # fmt: skip
                insight.record(
                    session, EventKind.assigned, conversation_id, site_id, team_id=team_id, agent_id=to_agent
                )
            await session.commit()
            return changed is not None

    async def close(self, conversation: Conversation, closed_by: str) -> bool:
        """Close for good; a later visitor message starts a new conversation. False if already closed."""
        async with self._sessions() as session:
            result = await session.execute(
                update(Conversation)
                .where(col(Conversation.id) == conversation.id, col(Conversation.status) != ConversationStatus.closed)
                .values(status=ConversationStatus.closed, closed_at=utcnow())
                .returning(
                    col(Conversation.site_id),
                    col(Conversation.team_id),
                    col(Conversation.agent_id),
                    col(Conversation.closed_at),
                )
            )
            changed = result.first()
            if changed is not None:
                site_id, team_id, agent_id, closed_at = changed
                insight.record(
                    session, EventKind.closed, conversation.id, site_id, team_id=team_id, agent_id=agent_id,
                    at=closed_at,
                )  # fmt: skip
            await session.commit()
        if changed is None:
            return False
        # Committed: the close happened whatever the broker does now (see publish_committed).
        await self.system_line(conversation.id, f"{closed_by} closed the conversation.")
        await self.publish_committed(
            channels.conversation(conversation.id), outbound.closed(conversation.id, closed_by)
        )
        closed = await self.get(conversation.id)
        if closed is not None:
            summary = await self.summary(closed)
            await self.publish_committed(channels.site(closed.site_id), outbound.conversation(summary))
            await self._webhooks.emit(closed.site_id, "conversation.closed", summary)
        return True

    async def abandon(self, conversation_id: str, page: str | None, left_at: datetime) -> Conversation | None:
        """The visitor gave up (left at `left_at`) while queued: closed, with a `left` event. None if it was
        no longer queued."""
        now = left_at
        async with self._sessions() as session:
            result = await session.execute(
                update(Conversation)
                .where(col(Conversation.id) == conversation_id, col(Conversation.status) == ConversationStatus.queued)
                .values(status=ConversationStatus.closed, closed_at=now)
                .returning(col(Conversation.site_id), col(Conversation.team_id))
            )
            changed = result.first()
            if changed is not None:
                await insight.record_left(session, conversation_id, changed[0], changed[1], page, now)
                insight.record(session, EventKind.closed, conversation_id, changed[0], team_id=changed[1], at=now)
            await session.commit()
            if changed is None:
                return None
            return await session.get(Conversation, conversation_id)

    async def set_offline_email(self, conversation_id: str, email: str) -> None:
        async with self._sessions() as session:
            await session.execute(
                update(Conversation).where(col(Conversation.id) == conversation_id).values(offline_email=email)
            )
            await session.commit()

    async def rate(self, conversation: Conversation | ConversationView, score: int, comment: str) -> None:
        if conversation.status != ConversationStatus.closed:
            raise Forbidden("a conversation can be rated once it is closed")
        async with self._sessions() as session:
            existing = await session.get(Rating, conversation.id)
            if existing is None:
                session.add(Rating(conversation_id=conversation.id, score=score, comment=comment.strip()))
            else:
                existing.score, existing.comment = score, comment.strip()
            await insight.record_rated(session, conversation.id, conversation.site_id, score)
            await session.commit()
        await self._broker.fanout.publish(
            channels.staff(conversation.id),
            outbound.rating(conversation.id, score, comment),
        )

"""Sending a message, from either side: store it, deliver it, acknowledge it, tell the webhooks.

The order is the product's promise: the ack goes out only once the message is stored; the other side's copy
is handed to the broker before the sender's own copy and ack, which leave together in one write (the
sender's socket is corked meanwhile); webhooks are recorded after the ack, so they never slow a chat.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from nameplate.actions.replies import Replies
from nameplate.errors import Forbidden, NameplateError
from nameplate.protocol import outbound
from nameplate.protocol.vocabulary import AuthorKind, ConversationStatus, ErrorCode
from nameplate.services import Services
from nameplate.store.message_log.batch import ConversationClosed, NewMessage, NotAssigned, StoredMessage
from nameplate.store.models import Agent, Conversation, Message
from nameplate.store.views import ConversationView, CustomerView

log = logging.getLogger("nameplate.actions")


class Visitor(Protocol):
    """The visitor's side of a socket, as an action needs it: who, where, and their current conversation."""

    @property
    def site_id(self) -> str: ...

    @property
    def customer(self) -> CustomerView: ...

    @property
    def conversation(self) -> ConversationView | None: ...

    async def follow(self, conversation: Conversation) -> None:
        """Make `conversation` the current one and listen to it (before anything is published in it)."""


async def send_visitor_message(
    services: Services, visitor: Visitor, replies: Replies, client_id: str, body: str, team_id: str | None
) -> None:
    """A visitor's message (body already cleaned). With no open conversation it opens one, which is queued
    after the message is stored, so the agent who takes it finds the question there."""
    conversations = services.conversations
    current = visitor.conversation
    started: Conversation | None = None
    if current is None or current.status == ConversationStatus.closed:
        already = await conversations.find_sent(visitor.customer.id, client_id)
        if already is not None:
            if current is None or already.conversation_id != current.id:
                # Stored in a conversation this socket does not follow (the ack was lost with the socket
                # that sent it): follow it if it is still open, or the visitor would miss the replies.
                found = await conversations.get(already.conversation_id)
                if found is not None and found.status != ConversationStatus.closed:
                    await visitor.follow(found)
            # A resend that crossed a close: acknowledge the stored copy, do not open a new conversation.
            # Published again like any duplicate (its first publish may never have happened).
            with replies.corked():
                conversations.deliver(_as_duplicate(already), conversations.visitor_author(visitor.customer))
                replies.send(outbound.ack(client_id, already.seq, already.conversation_id))
            return
        started = await _open(services, visitor, team_id)
        conversation_id = started.id
    else:
        conversation_id = current.id
    try:
        stored = await conversations.store(NewMessage(conversation_id, AuthorKind.visitor, body, client_id=client_id))
    except ConversationClosed:
        # Closed between our last look and the write: the message opens a new conversation.
        started = await _open(services, visitor, team_id)
        stored = await conversations.store(NewMessage(started.id, AuthorKind.visitor, body, client_id=client_id))
    await _deliver(services, visitor.site_id, stored, conversations.visitor_author(visitor.customer), replies)
    if started is not None:
        try:
            await services.router.enqueue(started)
        except Exception as error:
            # Stored, acked and queued in the store: it reaches the broker's queue as soon as the broker
            # takes it (or with the rebuild after the outage), never waits for a later rebuild by chance.
            log.warning("queueing %s failed (%s); retrying", started.id, error)
            conversation_id = started.id
            services.router.complete_later(
                f"the queueing of {conversation_id}", lambda: services.router.enqueue_if_queued(conversation_id)
            )


def _as_duplicate(message: Message) -> StoredMessage:
    return StoredMessage(
        message.conversation_id,
        message.seq,
        message.author_kind,
        message.body,
        message.agent_id,
        message.client_id,
        message.private,
        message.created_at,
        duplicate=True,
    )


async def _open(services: Services, visitor: Visitor, team_id: str | None) -> Conversation:
    if team_id is not None:
        teams = {team.id for team in await services.directory.teams(visitor.site_id)}
        if team_id not in teams:
            raise NameplateError(ErrorCode.invalid, "no such team")
    conversation = await services.conversations.start(visitor.site_id, visitor.customer.id, team_id)
    await visitor.follow(conversation)
    return conversation


async def send_agent_message(
    services: Services,
    agent: Agent,
    replies: Replies,
    conversation_id: str,
    body: str,
    client_id: str | None,
    private: bool,
) -> StoredMessage:
    """An agent's message or private note (body already cleaned) in a conversation assigned to them. The
    assignment is checked by the write itself; a conversation that is not theirs (any more) is Forbidden."""
    author = {"kind": AuthorKind.agent, **(await services.directory.card(agent.id))}
    message = NewMessage(
        conversation_id,
        AuthorKind.agent,
        body,
        agent_id=agent.id,
        client_id=client_id,
        private=private,
        assigned_to=agent.id,
    )
    try:
        stored = await services.conversations.store(message)
    except (NotAssigned, ConversationClosed):
        raise Forbidden("this conversation is not assigned to you") from None
    # Every conversation assigned to an agent is in the agent's site.
    await _deliver(services, agent.site_id, stored, author, replies)
    return stored


async def _deliver(
    services: Services, site_id: str, stored: StoredMessage, author: dict[str, Any], replies: Replies
) -> None:
    conversations = services.conversations
    with replies.corked():
        delivered = conversations.deliver(stored, author)
        if stored.client_id:  # a note or message sent without one is not acknowledged
            replies.send(outbound.ack(stored.client_id, stored.seq, stored.conversation_id))
    if delivered is not None:
        await conversations.tell_webhooks(site_id, stored, delivered)

"""Sending a message, from either side: store it, deliver it, acknowledge it, tell the webhooks.

The order is the product's promise: the ack goes out only once the message is stored; the other side's copy
is handed to the broker before the sender's own copy and ack, which leave together in one write (the
sender's socket is corked meanwhile); webhooks are recorded after the ack, so they never slow a chat.
"""

from __future__ import annotations

from typing import Any, Protocol

from nameplate.actions.replies import Replies
from nameplate.errors import Forbidden, NameplateError
from nameplate.protocol import outbound
from nameplate.protocol.vocabulary import AuthorKind, ConversationStatus, ErrorCode
from nameplate.services import Services
from nameplate.store.message_log.batch import ConversationClosed, NewMessage, NotAssigned, StoredMessage
from nameplate.store.models import Agent, Conversation
from nameplate.store.views import ConversationView, CustomerView


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
            # A resend that crossed a close: acknowledge the stored copy, do not open a new conversation.
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
        await services.router.enqueue(started)


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

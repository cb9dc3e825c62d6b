"""What changes a conversation's state: close, transfer, rate, the visitor's choice, the offline e-mail."""

from __future__ import annotations

from nameplate.errors import Forbidden, NameplateError
from nameplate.protocol.vocabulary import ErrorCode
from nameplate.services import Services
from nameplate.store.models import Agent, Conversation
from nameplate.store.views import ConversationView


async def close_conversation(services: Services, conversation: Conversation, closed_by: str) -> bool:
    """Close for good and give the agent's slot to whoever waits. False if it was closed already."""
    if not await services.conversations.close(conversation, closed_by):
        return False
    await services.router.release(conversation)
    return True


async def transfer_conversation(
    services: Services,
    conversation: Conversation,
    from_agent: Agent,
    to_agent_id: str | None,
    to_team_id: str | None,
    note: str,
) -> None:
    await services.router.transfer(conversation, from_agent, to_agent_id, to_team_id, note)


async def rate_conversation(
    services: Services, customer_id: str, conversation: Conversation | ConversationView | None, score: int, comment: str
) -> Conversation | ConversationView:
    """The visitor's rating of one of their own (closed) conversations."""
    if conversation is None or conversation.customer_id != customer_id:
        raise Forbidden("you can only rate your own conversations")
    await services.conversations.rate(conversation, score, comment)
    return conversation


async def choose_wait(services: Services, conversation: ConversationView | None, wait_for_preferred: bool) -> None:
    """The visitor's answer to an offer: wait for their previous agent, or take the next person."""
    if conversation is None:
        raise NameplateError(ErrorCode.no_conversation, "there is nothing waiting to choose for")
    await services.router.choose(conversation, wait_for_preferred)


async def leave_offline_email(services: Services, conversation: ConversationView | None, email: str) -> None:
    """Where the reply goes when no one was online to answer."""
    if conversation is None:
        raise NameplateError(ErrorCode.no_conversation, "send a message first, then leave your e-mail")
    await services.conversations.set_offline_email(conversation.id, email)

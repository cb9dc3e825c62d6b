"""What a supervisor does in a chat they watch: whisper to the agent, take the chat over. Both are recorded
in the audit log with the console's address."""

from __future__ import annotations

from nameplate.actions.replies import Replies
from nameplate.errors import Forbidden, NameplateError
from nameplate.protocol import outbound
from nameplate.protocol.vocabulary import AuditAction, AuthorKind, ConversationStatus, ErrorCode, Visibility, is_staff
from nameplate.services import Services
from nameplate.store.message_log.batch import ConversationClosed, NewMessage, StoredMessage
from nameplate.store.models import Agent


async def whisper(
    services: Services,
    supervisor: Agent,
    replies: Replies,
    conversation_id: str,
    body: str,
    client_id: str | None,
    address: str,
) -> StoredMessage:
    """A whisper (body already cleaned): stored as a private message of visibility `whisper`, delivered on
    the staff channel only — the agent's console and other supervisors, never the visitor."""
    if not is_staff(supervisor.role):
        raise Forbidden("only supervisors can whisper")
    conversation = await services.conversations.get_in_site(conversation_id, supervisor.site_id)
    if conversation.status != ConversationStatus.active or conversation.agent_id is None:
        raise NameplateError(ErrorCode.conflict, "no agent is answering this chat to whisper to", 409)
    if conversation.agent_id == supervisor.id:
        raise NameplateError(ErrorCode.invalid, "you are answering this chat: write a private note instead")
    message = NewMessage(
        conversation.id,
        AuthorKind.agent,
        body,
        agent_id=supervisor.id,
        client_id=client_id,
        private=True,
        visibility=Visibility.whisper,
    )
    try:
        stored = await services.conversations.store(message)
    except ConversationClosed:
        raise NameplateError(ErrorCode.conflict, "the conversation is closed", 409) from None
    author = {"kind": AuthorKind.agent, **(await services.directory.card(supervisor.id))}
    with replies.corked():
        delivered = services.conversations.deliver(stored, author)
        if stored.client_id:
            replies.send(outbound.ack(stored.client_id, stored.seq, stored.conversation_id))
    if delivered is not None:
        # Whispers go to no webhook (`tell_webhooks` would refuse them too): only the audit log hears of it.
        await services.audit.record(
            supervisor.site_id, supervisor, AuditAction.whispered, f"conversation {conversation.id}", "", address
        )
    return stored


async def take_over(services: Services, supervisor: Agent, conversation_id: str, address: str) -> None:
    if not is_staff(supervisor.role):
        raise Forbidden("only supervisors can take a chat over")
    conversation = await services.conversations.get_in_site(conversation_id, supervisor.site_id)
    previous = await services.router.take_over(conversation, supervisor)
    old = await services.directory.agent(previous)
    await services.audit.record(
        supervisor.site_id,
        supervisor,
        AuditAction.took_over,
        f"conversation {conversation.id}",
        f"from {old.full_name}" if old else "",
        address,
    )

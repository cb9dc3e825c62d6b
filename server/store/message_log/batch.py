"""The rules of one batch of messages written in one transaction, and the SQLite writer's planner for them.

The SQLite writer (`message_log_sqlite`) locks the database, reads the batch's conversations and the
client_ids already stored, and hands them to `plan_batch`, which decides each message's fate and seq; the
writer then stores the planned rows and advances the conversations in the same transaction. The
PostgreSQL writer (`message_log_postgres`) states the same rules in its one statement, so that a batch
costs one round trip; the engine tests hold both to every rule. Seqs are gap-free and unique per
conversation even with several processes writing to PostgreSQL (the rows stay locked until commit), and
a `client_id` already stored for the conversation by the same kind of author returns its original seq:
retries never duplicate, and the other side's client_ids never swallow a message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from nameplate.protocol.vocabulary import Visibility
from nameplate.store.models import AuthorKind, ConversationStatus


class ConversationClosed(Exception):
    """The conversation was closed before this message could be stored."""


class ConversationMissing(Exception):
    """No such conversation (an id from a client that was never valid, or one deleted meanwhile)."""


class NotAssigned(Exception):
    """The message required its conversation to be active and assigned to its author, and it no longer is."""


@dataclass(frozen=True)
class NewMessage:
    conversation_id: str
    author_kind: str
    body: str
    agent_id: str | None = None
    client_id: str | None = None
    private: bool = False
    # System lines (e.g. "conversation closed") may be written to a closed conversation.
    allow_closed: bool = False
    # An agent's words are stored only while the conversation is active and theirs: checked inside the
    # write transaction, so a console's cached view of "mine" can never let a message slip through.
    assigned_to: str | None = None
    # Only to tell a whisper from a note: unset, a message is public or (private) a note.
    visibility: Visibility | None = None

    def __post_init__(self) -> None:
        # A note or whisper is private whatever the caller said: `private` is what every reader filters on.
        if self.visibility not in (None, Visibility.public) and not self.private:
            object.__setattr__(self, "private", True)

    @property
    def kind(self) -> Visibility:
        if self.visibility is not None and self.visibility != Visibility.public:
            return self.visibility
        return Visibility.note if self.private else Visibility.public


@dataclass(frozen=True)
class StoredMessage:
    conversation_id: str
    seq: int
    author_kind: str
    body: str
    agent_id: str | None
    client_id: str | None
    private: bool
    created_at: datetime
    # True when this client_id had been stored before: the caller acks again but publishes nothing.
    duplicate: bool = False
    visibility: str = Visibility.public

    def __post_init__(self) -> None:
        # Never "public" and private at once: a private message read back without its kind is a note.
        if self.private and self.visibility == Visibility.public:
            object.__setattr__(self, "visibility", Visibility.note)


# What a writer answers for one batch: a result per message, in order, or why the whole batch failed.
BatchOutcome = list[StoredMessage | Exception] | Exception
# Called on the event loop, exactly once per submitted batch, with its outcome.
BatchDone = Callable[[BatchOutcome], None]


@dataclass
class ConversationState:
    """A locked conversation row as a batch sees it; `last_seq` advances as the batch is planned."""

    last_seq: int
    status: str
    agent_id: str | None


@dataclass
class BatchPlan:
    results: list[StoredMessage | Exception] = field(default_factory=list)
    # Message rows to insert, as column → value.
    rows: list[dict[str, Any]] = field(default_factory=list)
    # Conversations to advance: (id, new last_seq, time of the first public agent reply or None).
    advances: list[tuple[str, int, datetime | None]] = field(default_factory=list)


def plan_batch(
    batch: list[NewMessage],
    state: dict[str, ConversationState],
    already_stored: list[StoredMessage],
    now: datetime,
) -> BatchPlan:
    """One result per message, in order, and the rows that store the new ones. Pure: no database."""
    known = {(m.conversation_id, m.author_kind, m.client_id): m for m in already_stored}
    plan = BatchPlan()
    first_reply: set[str] = set()
    for message in batch:
        key = (message.conversation_id, message.author_kind, message.client_id)
        if message.client_id and key in known:
            plan.results.append(replace(known[key], duplicate=True))
            continue
        current = state.get(message.conversation_id)
        if current is None:
            plan.results.append(ConversationMissing(message.conversation_id))
            continue
        if current.status == ConversationStatus.closed and not message.allow_closed:
            plan.results.append(ConversationClosed(message.conversation_id))
            continue
        if message.assigned_to is not None and (
            current.status != ConversationStatus.active or current.agent_id != message.assigned_to
        ):
            plan.results.append(NotAssigned(message.conversation_id))
            continue
        current.last_seq += 1
        stored = StoredMessage(
            message.conversation_id,
            current.last_seq,
            message.author_kind,
            message.body,
            message.agent_id,
            message.client_id,
            message.private,
            now,
            visibility=message.kind,
        )
        plan.rows.append(
            {
                "conversation_id": stored.conversation_id,
                "seq": stored.seq,
                "author_kind": stored.author_kind,
                "agent_id": stored.agent_id,
                "body": stored.body,
                "private": stored.private,
                "visibility": stored.visibility,
                "client_id": stored.client_id,
                "created_at": now,
            }
        )
        if message.client_id:
            known[key] = stored
        if message.author_kind == AuthorKind.agent and not message.private:
            first_reply.add(message.conversation_id)
        plan.results.append(stored)
    touched = sorted({row["conversation_id"] for row in plan.rows})
    plan.advances = [(cid, state[cid].last_seq, now if cid in first_reply else None) for cid in touched]
    return plan

"""The event timeline: one append-only row per thing that happened to a conversation.

`record` adds a row to a session the caller is about to commit, so the event and the change it records are
one transaction: a report never counts an assignment that was rolled back, nor misses one that was kept.
The message log writers use raw SQL; their first-reply statements are here too, next to the kinds.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from nameplate.desk.transcripts import as_utc
from nameplate.store.models import Conversation, InsightEvent, utcnow


class EventKind(StrEnum):
    queued = "queued"  # waiting for an agent: a new conversation, a requeue, a transfer to a team
    assigned = "assigned"  # an agent took it (value: seconds waited since queued, when it was queued)
    first_reply = "first_reply"  # the first public agent message (value: seconds since the visitor's first)
    transfer = "transfer"  # agent_id handed it on; detail: the agent it went to, or "team:<id>"
    left = "left"  # the visitor gave up while queued (value: seconds waited; detail: the page)
    closed = "closed"  # agent_id: who served at close, None if nobody did
    rated = "rated"  # value: the score; agent_id: who served at close (credited the rating)
    emailed = "emailed"  # a follow-up e-mail went to the visitor; agent_id: whose name it carried


MAX_DETAIL_CHARS = 2000


def record(
    session: AsyncSession,
    kind: EventKind,
    conversation_id: str,
    site_id: str,
    *,
    team_id: str | None = None,
    agent_id: str | None = None,
    value: float | None = None,
    detail: str | None = None,
    at: datetime | None = None,
) -> InsightEvent:
    """Add the event to `session`; it is written when the caller commits, with the change it describes."""
    event = InsightEvent(
        site_id=site_id,
        conversation_id=conversation_id,
        kind=kind.value,
        at=at or utcnow(),
        team_id=team_id,
        agent_id=agent_id,
        value=value,
        detail=detail[:MAX_DETAIL_CHARS] if detail is not None else None,
    )
    session.add(event)
    return event


_EVENT = InsightEvent.__tablename__
_CONVERSATION = Conversation.__tablename__

# The message log writers record the first agent reply in the batch that stores it. A conversation whose
# first_agent_reply_at now equals the batch's time got its first reply from this batch (an earlier batch
# left an earlier time there). The value is measured from the conversation's creation: a conversation is
# opened by its visitor's first message (`realtime.visitor`), stored right after it; reading that message
# instead would put the message table into the writer's hot statement.
SQLITE_FIRST_REPLY = f"""
INSERT INTO {_EVENT} (site_id, conversation_id, kind, at, team_id, agent_id, value)
SELECT c.site_id, c.id, '{EventKind.first_reply.value}', c.first_agent_reply_at, c.team_id, c.agent_id,
       (julianday(c.first_agent_reply_at) - julianday(c.created_at)) * 86400.0
FROM {_CONVERSATION} AS c WHERE c.id = ? AND c.first_agent_reply_at = ?
"""

# A CTE for the PostgreSQL batch statement: `advanced` must return id, site_id, team_id, agent_id, created_at
# and first_agent_reply_at; $10 is the batch's time.
POSTGRES_FIRST_REPLY_CTE = f"""
, first_replies AS (
    INSERT INTO {_EVENT} (site_id, conversation_id, kind, at, team_id, agent_id, value)
    SELECT a.site_id, a.id, '{EventKind.first_reply.value}', $10, a.team_id, a.agent_id,
           extract(epoch FROM $10::timestamptz - a.created_at)
    FROM advanced AS a WHERE a.first_agent_reply_at = $10
)
"""


async def _last(session: AsyncSession, conversation_id: str, kind: EventKind) -> InsightEvent | None:
    """The conversation's latest event of this kind."""
    result = await session.execute(
        select(InsightEvent)
        .where(col(InsightEvent.conversation_id) == conversation_id, col(InsightEvent.kind) == kind.value)
        .order_by(col(InsightEvent.id).desc())
        .limit(1)
    )
    return result.scalar_one_or_none()


def seconds_between(start: datetime, end: datetime) -> float:
    return (as_utc(end) - as_utc(start)).total_seconds()


async def _wait_since_queued(session: AsyncSession, conversation_id: str, at: datetime) -> float | None:
    queued = await _last(session, conversation_id, EventKind.queued)
    return seconds_between(queued.at, at) if queued is not None else None


async def record_assigned(
    session: AsyncSession, conversation_id: str, site_id: str, team_id: str | None, agent_id: str, at: datetime
) -> None:
    """queued → assigned: the value is the wait since it was last queued."""
    wait = await _wait_since_queued(session, conversation_id, at)
    record(session, EventKind.assigned, conversation_id, site_id, team_id=team_id, agent_id=agent_id, value=wait, at=at)


async def record_left(
    session: AsyncSession, conversation_id: str, site_id: str, team_id: str | None, page: str | None, at: datetime
) -> float | None:
    """The visitor gave up while queued: the value is how long they had waited since last queued."""
    wait = await _wait_since_queued(session, conversation_id, at)
    record(session, EventKind.left, conversation_id, site_id, team_id=team_id, value=wait, detail=page, at=at)
    return wait


async def record_rated(session: AsyncSession, conversation_id: str, site_id: str, score: int) -> None:
    """The rating is credited to whoever served at close (and their team), which no later change can move."""
    closed = await _last(session, conversation_id, EventKind.closed)
    record(
        session,
        EventKind.rated,
        conversation_id,
        site_id,
        team_id=closed.team_id if closed else None,
        agent_id=closed.agent_id if closed else None,
        value=float(score),
    )

"""The event timeline: one append-only row per thing that happened to a conversation.

`record` adds a row to a session the caller is about to commit, so the event and the change it records are
one transaction: a report never counts an assignment that was rolled back, nor misses one that was kept.
The message log writers record the first agent reply in their own statements (store/message_log/first_reply.py).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from nameplate.desk.transcripts import as_utc
from nameplate.protocol.vocabulary import EventKind
from nameplate.store.models import InsightEvent, utcnow

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

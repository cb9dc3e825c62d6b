"""The report queries: events of a period from the store, figures from `metrics`, rows for the pages.

A period is a range of days in the supervisor's time zone; a conversation belongs to the day its visitor
first queued, in that zone. All of a conversation's events are read (a rating can come days later).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, select
from sqlmodel import col

from nameplate.desk.transcripts import as_utc
from nameplate.errors import NameplateError
from nameplate.insight.metrics import (
    Event,
    Facts,
    Figures,
    agent_figures,
    behind,
    facts_by_conversation,
    figures,
    local_day,
)
from nameplate.insight.topics import Embedder, Question, Topic, cluster, count_previous, default_embedder, question_of
from nameplate.people.customers import display_name
from nameplate.people.directory import Directory
from nameplate.protocol.vocabulary import ErrorCode, EventKind
from nameplate.store.engine import Sessions
from nameplate.store.models import Agent, AuthorKind, Conversation, Customer, InsightEvent, Message, Rating

MAX_PERIOD_DAYS = 366
DEFAULT_PERIOD_DAYS = 7
MAX_ROWS = 1000
# Past this many first messages a day, the rest of the day is left out of clustering (O(n²) memory).
MAX_QUESTIONS_PER_DAY = 5000


@dataclass(frozen=True)
class Period:
    first: date
    last: date
    zone: ZoneInfo

    @property
    def start(self) -> datetime:
        """The first day's local midnight, in UTC."""
        return datetime.combine(self.first, time(), self.zone).astimezone(UTC)

    @property
    def end(self) -> datetime:
        """The local midnight after the last day, in UTC (excluded)."""
        return datetime.combine(self.last + timedelta(days=1), time(), self.zone).astimezone(UTC)

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=n) for n in range((self.last - self.first).days + 1)]

    def previous(self) -> Period:
        """The period of the same length just before this one (for trends)."""
        length = timedelta(days=len(self.days))
        return Period(self.first - length, self.last - length, self.zone)

    def contains(self, moment: datetime) -> bool:
        return self.start <= as_utc(moment) < self.end


def parse_zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo((name or "UTC").strip() or "UTC")
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise NameplateError(ErrorCode.invalid, "tz must be an IANA time zone such as Europe/Berlin") from exc


def parse_period(first: str | None, last: str | None, zone_name: str | None, now: datetime) -> Period:
    """The query's range (YYYY-MM-DD, both days included) in its zone; the last 7 days when none is given."""
    zone = parse_zone(zone_name)
    today = now.astimezone(zone).date()
    try:
        last_day = date.fromisoformat(last.strip()) if last and last.strip() else today
        first_day = (
            date.fromisoformat(first.strip())
            if first and first.strip()
            else last_day - timedelta(days=DEFAULT_PERIOD_DAYS - 1)
        )
    except ValueError as exc:
        raise NameplateError(ErrorCode.invalid, "from and to must be dates like 2024-05-31") from exc
    if first_day > last_day:
        raise NameplateError(ErrorCode.invalid, "the start date is after the end date")
    if (last_day - first_day).days + 1 > MAX_PERIOD_DAYS:
        raise NameplateError(ErrorCode.invalid, f"a report covers at most {MAX_PERIOD_DAYS} days")
    return Period(first_day, last_day, zone)


@dataclass(frozen=True)
class Row:
    """One line of a figures table: a day, an agent or a team."""

    key: str
    label: str
    figures: Figures


@dataclass(frozen=True)
class Report:
    period: Period
    total: Figures
    days: list[Row]
    agents: list[Row]
    teams: list[Row]


@dataclass(frozen=True)
class ConversationLine:
    """A conversation behind a figure (drill-down), one who gave up waiting, or a rating."""

    facts: Facts
    customer_name: str
    email: str | None
    agent_name: str | None
    comment: str | None = None


class Reports:
    def __init__(self, sessions: Sessions, directory: Directory, embedder: str = "auto") -> None:
        self._sessions = sessions
        self._directory = directory
        self._embedder = embedder

    async def facts(self, site_id: str, period: Period) -> list[Facts]:
        """Every conversation first queued in the period, from its events."""
        started = (
            select(col(InsightEvent.conversation_id))
            .where(
                col(InsightEvent.site_id) == site_id,
                col(InsightEvent.kind) == EventKind.queued.value,
                col(InsightEvent.at) >= period.start,
                col(InsightEvent.at) < period.end,
            )
            .distinct()
        )
        # Plain columns, not ORM objects: building a model instance per event costs ten times the query.
        query = (
            select(
                col(InsightEvent.conversation_id),
                col(InsightEvent.kind),
                col(InsightEvent.at),
                col(InsightEvent.team_id),
                col(InsightEvent.agent_id),
                col(InsightEvent.value),
                col(InsightEvent.detail),
            )
            .where(col(InsightEvent.site_id) == site_id, col(InsightEvent.conversation_id).in_(started))
            .order_by(col(InsightEvent.conversation_id), col(InsightEvent.id))
        )
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
        events = [
            Event(cid, kind, as_utc(at), team, agent, value, detail)
            for cid, kind, at, team, agent, value, detail in rows
        ]
        return [f for f in facts_by_conversation(events) if period.contains(f.started_at)]

    async def report(self, site_id: str, period: Period) -> Report:
        facts = await self.facts(site_id, period)
        # One pass groups the chats by day, by agent involved and by team; each group is then measured.
        by_day: dict[date, list[Facts]] = {day: [] for day in period.days}
        by_agent: dict[str, list[Facts]] = {}
        by_team: dict[str | None, list[Facts]] = {}
        for f in facts:
            by_day.setdefault(local_day(f.started_at, period.zone), []).append(f)
            for agent_id in {*f.handled, f.closed_by, f.rated_agent} - {None}:
                by_agent.setdefault(str(agent_id), []).append(f)
            by_team.setdefault(f.team_id, []).append(f)
        agents = await self._directory.agents(site_id)
        teams = await self._directory.teams(site_id)
        return Report(
            period,
            figures(facts),
            [Row(day.isoformat(), day.isoformat(), figures(items)) for day, items in sorted(by_day.items())],
            [
                Row(a.id, a.full_name, agent_figures(by_agent.get(a.id, []), a.id))
                for a in agents
                if a.active or a.id in by_agent
            ],
            [Row(t.id, t.name, figures(by_team.get(t.id, []))) for t in teams]
            + [Row("", "No team", figures(by_team.get(None, [])))],
        )

    async def behind(
        self,
        site_id: str,
        period: Period,
        metric: str,
        day: date | None = None,
        agent_id: str | None = None,
        team_id: str | None = None,
    ) -> list[ConversationLine]:
        chosen = behind(await self.facts(site_id, period), metric, period.zone, day, agent_id, team_id)
        return await self._lines(chosen[-MAX_ROWS:][::-1])

    async def gave_up(self, site_id: str, period: Period) -> list[ConversationLine]:
        """The visitors who left the queue, newest first."""
        chosen = [f for f in await self.facts(site_id, period) if f.abandoned]
        return await self._lines(sorted(chosen, key=lambda f: f.left_at or f.started_at, reverse=True)[:MAX_ROWS])

    async def ratings(
        self,
        site_id: str,
        period: Period,
        score: int | None = None,
        agent_id: str | None = None,
        team_id: str | None = None,
    ) -> list[ConversationLine]:
        """Rated conversations of the period, newest rating first; filters by score and the credited agent/team."""
        chosen = [
            f
            for f in await self.facts(site_id, period)
            if f.score is not None
            and (score is None or f.score == score)
            and (agent_id is None or f.rated_agent == agent_id)
            and (team_id is None or f.rated_team == team_id)
        ]
        chosen.sort(key=lambda f: (f.closed_at or f.started_at, f.conversation_id), reverse=True)
        return await self._lines(chosen[:MAX_ROWS], with_comments=True)

    async def _lines(self, chosen: list[Facts], with_comments: bool = False) -> list[ConversationLine]:
        if not chosen:
            return []
        ids = [f.conversation_id for f in chosen]
        async with self._sessions() as session:
            rows = await session.execute(
                select(col(Conversation.id), col(Conversation.offline_email), Customer)
                .join(Customer, col(Customer.id) == col(Conversation.customer_id))
                .where(col(Conversation.id).in_(ids))
            )
            people = {cid: (offline, customer) for cid, offline, customer in rows}
            comments: dict[str, str] = {}
            if with_comments:
                found = await session.execute(
                    select(col(Rating.conversation_id), col(Rating.comment)).where(col(Rating.conversation_id).in_(ids))
                )
                comments = {cid: comment for cid, comment in found}
            wanted = {a for f in chosen for a in (f.rated_agent, f.closed_by, f.first_agent) if a}
            agents = await session.execute(select(Agent).where(col(Agent.id).in_(wanted)))
            names = {a.id: a.full_name for a in agents.scalars()}
        lines = []
        for f in chosen:
            offline, customer = people.get(f.conversation_id, (None, None))
            agent = f.rated_agent or f.closed_by or f.first_agent
            lines.append(
                ConversationLine(
                    f,
                    display_name(customer) if customer else "Visitor",
                    offline or (customer.email if customer else None),
                    names.get(agent or ""),
                    comments.get(f.conversation_id),
                )
            )
        return lines

    async def team_names(self, site_id: str) -> dict[str, str]:
        return {t.id: t.name for t in await self._directory.teams(site_id)}

    async def first_questions(self, site_id: str, period: Period) -> list[Question]:
        """The first visitor message of each conversation started in the period, masked, greetings dropped."""
        first = (
            select(col(Message.conversation_id), func.min(col(Message.seq)).label("seq"))
            .join(Conversation, col(Conversation.id) == col(Message.conversation_id))
            .where(
                col(Conversation.site_id) == site_id,
                col(Conversation.created_at) >= period.start,
                col(Conversation.created_at) < period.end,
                col(Message.author_kind) == AuthorKind.visitor,
            )
            .group_by(col(Message.conversation_id))
            .subquery()
        )
        query = (
            select(col(Message.conversation_id), col(Message.body), col(Message.created_at))
            .join(first, (first.c.conversation_id == col(Message.conversation_id)) & (first.c.seq == col(Message.seq)))
            .order_by(col(Message.created_at), col(Message.conversation_id))
        )
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
        questions: list[Question] = []
        per_day: dict[date, int] = {}
        for conversation_id, body, created_at in rows:
            text = question_of(body)
            if text is None:
                continue
            moment = as_utc(created_at)
            day = local_day(moment, period.zone)
            per_day[day] = per_day.get(day, 0) + 1
            if per_day[day] <= MAX_QUESTIONS_PER_DAY:
                questions.append(Question(conversation_id, moment, day, text))
        return questions

    async def topics(self, site_id: str, period: Period, embedder: Embedder | None = None) -> list[Topic]:
        """The period's repeated questions, with their counts in the previous period of the same length."""
        current = await self.first_questions(site_id, period)
        previous = await self.first_questions(site_id, period.previous())

        def work() -> list[Topic]:
            chosen = embedder or default_embedder(self._embedder)
            found = cluster(current, chosen)
            count_previous(found, previous, chosen)
            return found

        # Embedding and clustering are CPU work: off the event loop.
        return await asyncio.to_thread(work)

    async def top_questions(self, site_id: str, period: Period) -> list[tuple[str, int]]:
        return [(t.representative, t.count) for t in await self.topics(site_id, period) if t.count > 1]

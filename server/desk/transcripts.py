"""Transcripts for supervisors: find conversations, read them whole, export them.

Reading only; nothing here changes a conversation. Every query is scoped to one site, and every id that
comes from a client goes through `visible`, which answers "not found" for another site's conversation and
for a conversation an agent did not work on, so ids never leak across sites or agents.

Exports of a date range stream from a server-side cursor in batches: a year of messages never sits in
memory at once. Queries are plain SQL that SQLite and PostgreSQL both run, except full-text search: one
query language (`search_query`) compiled to a tsquery on PostgreSQL's GIN index and to an FTS5 MATCH on
SQLite (migration 0007 builds both; bench/search.py measures them over 10 million messages).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import reduce
from typing import Any

from sqlalchemy import ColumnElement, column, exists, func, literal_column, or_, select, table
from sqlmodel import col

from nameplate.desk.search_query import SearchQuery, Term, fts5_expression, highlight, parse
from nameplate.errors import NameplateError, NotFound
from nameplate.people.customers import customer_card
from nameplate.people.directory import agent_card
from nameplate.protocol.vocabulary import STAFF_ROLES, ErrorCode, Visibility
from nameplate.store.engine import Sessions
from nameplate.store.models import (
    Agent,
    AuthorKind,
    Conversation,
    ConversationStatus,
    Customer,
    Message,
    Rating,
    Site,
    Team,
    iso,
)

PAGE_SIZE = 50
# Rows fetched from the cursor per round trip and written to the response per chunk: large enough that
# the round trips do not dominate, small enough that a chunk stays a few hundred kilobytes.
EXPORT_BATCH = 500
# Conversations counted beyond the current page of the list. An exact count of a million rows (a site's
# whole history) costs more than the page itself; past this the page says "1,000+" and "Page 1 of 20+".
COUNT_AHEAD = 1000
# A search whose words are in at most this many messages reads them from the index first (PostgreSQL).
SPARSE_MATCHES = 2000
SYSTEM_AUTHOR_NAME = "System"
VISITOR_FALLBACK_NAME = "Visitor"


def as_utc(moment: datetime) -> datetime:
    """The store keeps UTC; SQLite hands it back without a zone. Either way the answer is aware UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def utc_iso(moment: datetime | None) -> str | None:
    return iso(as_utc(moment)) if moment is not None else None


def format_time(moment: datetime | None, seconds: bool = False) -> str:
    if moment is None:
        return ""
    return as_utc(moment).strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def format_duration(seconds: float | None) -> str:
    """45 s, 12 min, 1 h 05 min, 2 d 3 h: the precision a person reads at a glance."""
    if seconds is None:
        return ""
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes = whole // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def parse_day(value: str | None, name: str) -> date | None:
    """A YYYY-MM-DD query parameter (empty means "not given")."""
    if value is None or not value.strip():
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError as exc:
        raise NameplateError(ErrorCode.invalid, f"{name} must be a date like 2024-05-31") from exc


def day_bounds(first: date | None, last: date | None) -> tuple[datetime | None, datetime | None]:
    """[start of `first`, start of the day after `last`) in UTC: both days are included."""
    if first is not None and last is not None and first > last:
        raise NameplateError(ErrorCode.invalid, "the start date is after the end date")
    try:
        start = datetime(first.year, first.month, first.day, tzinfo=UTC) if first else None
        end = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1) if last else None
    except OverflowError as exc:  # 9999-12-31: the day after it is beyond what a datetime holds
        raise NameplateError(ErrorCode.invalid, "dates must be before 9999-12-31", 422) from exc
    return start, end


def author_name(kind: str, given: str | None, family: str | None, customer_name: str | None) -> str:
    if kind == AuthorKind.agent:
        return f"{given} {family}" if given is not None else "Former agent"
    if kind == AuthorKind.visitor:
        return customer_name or VISITOR_FALLBACK_NAME
    return SYSTEM_AUTHOR_NAME


@dataclass(frozen=True)
class ConversationQuery:
    site_id: str
    first_day: date | None = None
    last_day: date | None = None
    agent_id: str | None = None
    status: str | None = None
    team_id: str | None = None
    text: str = ""
    # Private notes are searched for supervisors; they are staff-only, never shown to visitors.
    include_private: bool = True
    page: int = 1


@dataclass(frozen=True)
class ConversationRow:
    id: str
    status: str
    customer_name: str
    customer_email: str | None
    agent_id: str | None
    agent_name: str | None
    team_name: str | None
    created_at: datetime
    assigned_at: datetime | None
    closed_at: datetime | None
    rating_score: int | None
    rating_comment: str | None

    def duration_seconds(self, now: datetime | None = None) -> float:
        """How long the conversation lasted, or has lasted so far if it is still open."""
        end = self.closed_at or now or datetime.now(UTC)
        return max(0.0, (as_utc(end) - as_utc(self.created_at)).total_seconds())

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "customer": {"name": self.customer_name, "email": self.customer_email},
            "agent": {"id": self.agent_id, "name": self.agent_name} if self.agent_id else None,
            "team": self.team_name,
            "started_at": utc_iso(self.created_at),
            "assigned_at": utc_iso(self.assigned_at),
            "closed_at": utc_iso(self.closed_at),
            "duration_s": round(self.duration_seconds()) if self.closed_at else None,
            "rating": (
                {"score": self.rating_score, "comment": self.rating_comment} if self.rating_score is not None else None
            ),
        }


@dataclass(frozen=True)
class Snippet:
    """Where a search matched: the words around the first match, and the match itself to highlight."""

    before: str
    match: str
    after: str
    private: bool


# Characters shown on each side of a match: about one line of context in the list.
SNIPPET_CONTEXT = 60


def snippet(body: str, query: SearchQuery, private: bool) -> Snippet | None:
    flat = " ".join(body.split())
    span = highlight(flat, query)
    if span is None:
        return None
    at, stop = span
    start, end = max(0, at - SNIPPET_CONTEXT), min(len(flat), stop + SNIPPET_CONTEXT)
    before = ("…" if start > 0 else "") + flat[start:at]
    after = flat[stop:end] + ("…" if end < len(flat) else "")
    return Snippet(before, flat[at:stop], after, private)


# -- full-text search, per engine ----------------------------------------------------------------------------
# The regconfig the stored vectors were made with (a literal: the queries' words are parsed the same way).
_SIMPLE: ColumnElement[Any] = literal_column("'simple'::regconfig")
# message.body_tsv: migration 0007's generated column on PostgreSQL, outside the models (SQLite has none).
_TSVECTOR: ColumnElement[Any] = literal_column("message.body_tsv")
# FTS5's table (migration 0007), outside the models: its hidden column named like the table takes MATCH.
_FTS = table("message_fts", column("rowid"), column("message_fts"))


def _tsquery_term(term: Term) -> Any:
    if term.prefix:
        # The word holds letters and digits only (search_query._WORD): nothing in it is tsquery syntax.
        return func.to_tsquery(_SIMPLE, term.words[0] + ":*")
    # Plain text, split by the same parser as the bodies: operators typed in it are just characters.
    return func.phraseto_tsquery(_SIMPLE, term.text)


def _tsquery(terms: list[Any]) -> Any:
    return reduce(func.tsquery_and, terms)


def message_match(query: SearchQuery, dialect: str) -> ColumnElement[bool]:
    """A message whose body matches the whole query."""
    if dialect == "postgresql":
        # The planner estimates a phrase as if its words were independent, but a phrase's words come
        # together: "tracking number" in 2 % of messages was estimated at 0.1 %, so the plan read all of
        # them (bench/search.py) instead of walking the newest conversations. So the index is asked for a
        # quoted phrase's longest word (an estimate from above), and the whole query, phrases and
        # exclusions, is checked by ts_match_vq (@@ as a function, which the planner does not try to
        # estimate) on the rows the index finds.
        looked_up = [
            func.phraseto_tsquery(_SIMPLE, term.stand_in()) if term.quoted else _tsquery_term(term)
            for term in query.include
        ]
        found = _TSVECTOR.op("@@")(_tsquery(looked_up))
        if query.exclude or any(term.quoted for term in query.include):
            wanted = _tsquery([_tsquery_term(term) for term in query.include])
            for term in query.exclude:
                wanted = func.tsquery_and(wanted, func.tsquery_not(_tsquery_term(term)))
            return found & func.ts_match_vq(_TSVECTOR, wanted)
        return found
    matching = select(_FTS.c.rowid).where(_FTS.c.message_fts.op("MATCH")(fts5_expression(query)))
    return col(Message.id).in_(matching)


@dataclass(frozen=True)
class ConversationPage:
    rows: list[ConversationRow]
    page: int
    # The list: at most COUNT_AHEAD beyond this page. A search: as far as this page. `more`: there are more.
    total: int
    page_size: int = PAGE_SIZE
    more: bool = False
    # conversation id → where the search text was found (only when searching)
    snippets: dict[str, Snippet] = field(default_factory=dict)

    @property
    def pages(self) -> int:
        known = max(1, -(-self.total // self.page_size))
        # A search knows only that there is a next page; the list's capped count knows more than that.
        return max(known, self.page + 1) if self.more else known


@dataclass(frozen=True)
class Line:
    """One stored message as transcripts and exports show it."""

    conversation_id: str
    seq: int
    sent_at: datetime
    author_kind: str
    author_name: str
    private: bool
    body: str
    # public, note or whisper (`Visibility`): only staff ever read transcripts, and they see which it was.
    visibility: str = Visibility.public

    @property
    def label(self) -> str:
        """How exports name a message that is not public."""
        labels: dict[str, str] = {Visibility.note: "private note", Visibility.whisper: "whisper"}
        return labels.get(self.visibility, "")

    def as_dict(self) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id,
            "seq": self.seq,
            "sent_at": utc_iso(self.sent_at),
            "author_kind": self.author_kind,
            "author_name": self.author_name,
            "private": self.private,
            "visibility": self.visibility,
            "body": self.body,
        }


@dataclass(frozen=True)
class Transcript:
    site_name: str
    conversation: ConversationRow
    lines: list[Line]

    def as_dict(self) -> dict[str, Any]:
        return {
            "site": self.site_name,
            "conversation": self.conversation.as_dict(),
            "messages": [line.as_dict() for line in self.lines],
        }


def _row_columns() -> tuple[Any, ...]:
    return (
        Conversation,
        col(Customer.name),
        col(Customer.email),
        col(Agent.given_name),
        col(Agent.family_name),
        col(Team.name),
        col(Rating.score),
        col(Rating.comment),
    )


def _row_query(*conditions: ColumnElement[bool]) -> Any:
    return (
        select(*_row_columns())
        .join(Customer, col(Customer.id) == col(Conversation.customer_id))
        .outerjoin(Agent, col(Agent.id) == col(Conversation.agent_id))
        .outerjoin(Team, col(Team.id) == col(Conversation.team_id))
        .outerjoin(Rating, col(Rating.conversation_id) == col(Conversation.id))
        .where(*conditions)
    )


def _to_row(record: Any) -> ConversationRow:
    conversation, customer_name, customer_email, given, family, team_name, score, comment = record
    return ConversationRow(
        id=conversation.id,
        status=conversation.status,
        customer_name=customer_name or VISITOR_FALLBACK_NAME,
        customer_email=customer_email,
        agent_id=conversation.agent_id,
        agent_name=f"{given} {family}" if given is not None else None,
        team_name=team_name,
        created_at=conversation.created_at,
        assigned_at=conversation.assigned_at,
        closed_at=conversation.closed_at,
        rating_score=score,
        rating_comment=comment,
    )


def _line_query() -> Any:
    return (
        select(
            col(Message.conversation_id),
            col(Message.seq),
            col(Message.created_at),
            col(Message.author_kind),
            col(Message.private),
            col(Message.body),
            col(Message.visibility),
            col(Agent.given_name),
            col(Agent.family_name),
            col(Customer.name),
        )
        .join(Conversation, col(Conversation.id) == col(Message.conversation_id))
        .join(Customer, col(Customer.id) == col(Conversation.customer_id))
        .outerjoin(Agent, col(Agent.id) == col(Message.agent_id))
    )


def _to_line(record: Any) -> Line:
    conversation_id, seq, sent_at, kind, private, body, visibility, given, family, customer_name = record
    if private and visibility == Visibility.public:
        visibility = Visibility.note  # a private row from before visibility existed
    return Line(
        conversation_id,
        seq,
        sent_at,
        kind,
        author_name(kind, given, family, customer_name),
        bool(private),
        body,
        visibility,
    )


def worked_on(agent_id: str) -> ColumnElement[bool]:
    """The agent holds the conversation now, or wrote in it (so held it once, before a transfer)."""
    wrote = exists().where(col(Message.conversation_id) == col(Conversation.id), col(Message.agent_id) == agent_id)
    return or_(col(Conversation.agent_id) == agent_id, wrote)


class Transcripts:
    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    # -- finding -------------------------------------------------------------------------------------
    async def search(self, query: ConversationQuery) -> ConversationPage:
        """One page of the site's conversations matching the filters, newest first (ties by id: stable)."""
        conditions: list[ColumnElement[bool]] = [col(Conversation.site_id) == query.site_id]
        start, end = day_bounds(query.first_day, query.last_day)
        if start is not None:
            conditions.append(col(Conversation.created_at) >= start)
        if end is not None:
            conditions.append(col(Conversation.created_at) < end)
        if query.agent_id:
            conditions.append(worked_on(query.agent_id))
        if query.status:
            if query.status not in {s.value for s in ConversationStatus}:
                raise NameplateError(ErrorCode.invalid, "status must be queued, active or closed")
            conditions.append(col(Conversation.status) == query.status)
        if query.team_id:
            conditions.append(col(Conversation.team_id) == query.team_id)
        searched = parse(query.text)
        async with self._sessions() as session:
            message_matches: list[ColumnElement[bool]] = []
            if searched is not None:
                dialect = session.get_bind().dialect.name
                message_matches.append(message_match(searched, dialect))
                if not query.include_private:
                    message_matches.append(col(Message.private).is_(False))
                conditions.append(
                    exists().where(col(Message.conversation_id) == col(Conversation.id), *message_matches)
                )
                if dialect == "postgresql":
                    conditions.extend(await self._sparse_hint(session, message_matches))
            newest_first = (col(Conversation.created_at).desc(), col(Conversation.id).desc())
            if searched is None:
                # Count only as far as COUNT_AHEAD past the requested page: enough to page on, never a scan
                # of a million rows for a number nobody needs exactly.
                limit = (max(1, query.page) - 1) * PAGE_SIZE + COUNT_AHEAD
                counted = select(col(Conversation.id)).where(*conditions).limit(limit + 1).subquery()
                total = (await session.execute(select(func.count()).select_from(counted))).scalar_one()
                more = total > limit
                total = min(total, limit)
                pages = max(1, -(-total // PAGE_SIZE))
                page = min(max(1, query.page), pages)
                result = await session.execute(
                    _row_query(*conditions).order_by(*newest_first).limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)
                )
                rows = [_to_row(record) for record in result]
            else:
                # A search is not counted at all: counting conversations that mention a common word reads
                # every message that has it, while the page stops at the fiftieth conversation. One row past
                # the page says whether there is a next one.
                page = max(1, query.page)
                result = await session.execute(
                    _row_query(*conditions).order_by(*newest_first).limit(PAGE_SIZE + 1).offset((page - 1) * PAGE_SIZE)
                )
                rows = [_to_row(record) for record in result]
                more = len(rows) > PAGE_SIZE
                if not rows and page > 1:  # past the end (a stale link): an empty last page, said so
                    page = 1
                    rows = [_to_row(record) for record in await session.execute(
                        _row_query(*conditions).order_by(*newest_first).limit(PAGE_SIZE + 1)
                    )]  # fmt: skip
                    more = len(rows) > PAGE_SIZE
                rows = rows[:PAGE_SIZE]
                total = (page - 1) * PAGE_SIZE + len(rows)
            snippets: dict[str, Snippet] = {}
            if searched is not None and rows:
                first = (
                    select(col(Message.conversation_id), func.min(col(Message.seq)).label("seq"))
                    .where(col(Message.conversation_id).in_([row.id for row in rows]), *message_matches)
                    .group_by(col(Message.conversation_id))
                    .subquery()
                )
                found = await session.execute(
                    select(col(Message.conversation_id), col(Message.body), col(Message.private)).join(
                        first,
                        (col(Message.conversation_id) == first.c.conversation_id) & (col(Message.seq) == first.c.seq),
                    )
                )
                for conversation_id, body, private in found:
                    excerpt = snippet(body, searched, bool(private))
                    if excerpt is not None:
                        snippets[conversation_id] = excerpt
        return ConversationPage(rows, page, total, snippets=snippets, more=more)

    @staticmethod
    async def _sparse_hint(session: Any, message_matches: list[ColumnElement[bool]]) -> list[ColumnElement[bool]]:
        """For a rare word, the conversations it is in, read from the index: an extra condition that makes
        the page a few primary-key look-ups. Without it the planner, which overestimates a word it has no
        statistics for (one in 40,000 messages estimated ten times as common), walked a million
        conversations newest first looking for one (1.5 s, bench/search.py). A common word answers the
        probe from its first rows (it stops at SPARSE_MATCHES + 1), and the newest-first walk finds it soon."""
        probe = select(col(Message.conversation_id)).where(*message_matches).limit(SPARSE_MATCHES + 1)
        rows = [conversation_id for (conversation_id,) in await session.execute(probe)]
        if len(rows) > SPARSE_MATCHES:
            return []
        return [col(Conversation.id).in_(sorted(set(rows)))]

    async def visible(self, viewer: Agent, conversation_id: str) -> ConversationRow:
        """The conversation if `viewer` may read it: supervisors and admins see their whole site, agents
        what they worked on. Anything else is "not found", exactly like an id that does not exist."""
        conditions = [col(Conversation.id) == conversation_id[:64], col(Conversation.site_id) == viewer.site_id]
        if viewer.role not in STAFF_ROLES:
            conditions.append(worked_on(viewer.id))
        async with self._sessions() as session:
            record = (await session.execute(_row_query(*conditions))).first()
        if record is None:
            raise NotFound("no such conversation")
        return _to_row(record)

    async def transcript(self, conversation: ConversationRow, site_id: str) -> Transcript:
        """Every message of a conversation (private notes and system lines included), in order."""
        async with self._sessions() as session:
            site = await session.get(Site, site_id)
            result = await session.execute(
                _line_query().where(col(Message.conversation_id) == conversation.id).order_by(col(Message.seq))
            )
            lines = [_to_line(record) for record in result]
        return Transcript(site.name if site else "", conversation, lines)

    # -- exporting -----------------------------------------------------------------------------------
    async def stream_lines(
        self, site_id: str, first_day: date, last_day: date, batch: int | None = None
    ) -> AsyncIterator[list[Line]]:
        """Every message of the conversations started in [first_day, last_day], in batches, from a
        server-side cursor. Whole conversations, never cut at midnight; ordered by start, then seq."""
        batch = batch or EXPORT_BATCH
        start, end = day_bounds(first_day, last_day)
        query = (
            _line_query()
            .where(
                col(Conversation.site_id) == site_id,
                col(Conversation.created_at) >= start,
                col(Conversation.created_at) < end,
            )
            .order_by(col(Conversation.created_at), col(Conversation.id), col(Message.seq))
            .execution_options(yield_per=batch)
        )
        async with self._sessions() as session:
            result = await session.stream(query)
            try:
                async for partition in result.partitions(batch):
                    yield [_to_line(record) for record in partition]
            finally:
                await result.close()

    # -- live ----------------------------------------------------------------------------------------
    async def live(self, site_id: str) -> list[dict[str, Any]]:
        """The site's queued and active conversations, in the shape of `Conversations.summary`, from one
        query: the live board's starting point before the site channel's updates."""
        async with self._sessions() as session:
            result = await session.execute(
                select(Conversation, Customer, Agent)
                .join(Customer, col(Customer.id) == col(Conversation.customer_id))
                .outerjoin(Agent, col(Agent.id) == col(Conversation.agent_id))
                .where(
                    col(Conversation.site_id) == site_id,
                    col(Conversation.status).in_([ConversationStatus.queued, ConversationStatus.active]),
                )
                .order_by(col(Conversation.created_at), col(Conversation.id))
            )
            records = list(result)
        return [
            {
                "id": conversation.id,
                "status": conversation.status,
                "team_id": conversation.team_id,
                "customer": customer_card(customer),
                "agent": agent_card(agent) if agent is not None else None,
                "created_at": utc_iso(conversation.created_at),
                "assigned_at": utc_iso(conversation.assigned_at),
                "closed_at": utc_iso(conversation.closed_at),
                "last_seq": conversation.last_seq,
                "visitor_read_seq": conversation.visitor_read_seq,
                "agent_read_seq": conversation.agent_read_seq,
            }
            for conversation, customer, agent in records
        ]


# -- export formats ----------------------------------------------------------------------------------------
CSV_COLUMNS = ("conversation_id", "seq", "sent_at", "author_kind", "author_name", "private", "visibility", "body")
# A spreadsheet treats a cell starting with one of these as a formula (tab and CR too, in some programs).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


# A spreadsheet that splits on ";" (some locales) or tabs ignores the quotes inside a line of a
# comma-separated file and starts a new cell after each one: "x;=1+2" would begin a cell with a formula.
_SPLIT_FORMULA = re.compile(r"([;\t]\s*)([=+\-@])")


def csv_safe(value: str) -> str:
    """Text people typed, made inert for spreadsheets: a quote before a would-be formula keeps it text, at
    the start of the cell and after each ";" or tab inside it (every cell is also quoted: see csv_text)."""
    value = _SPLIT_FORMULA.sub(r"\1'\2", value)
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def csv_record(line: Line) -> list[str]:
    # Ids, times, kinds and flags are generated by the server; names and bodies were typed by people.
    return [
        line.conversation_id,
        str(line.seq),
        utc_iso(line.sent_at) or "",
        line.author_kind,
        csv_safe(line.author_name),
        "true" if line.private else "false",
        line.visibility,
        csv_safe(line.body),
    ]


def csv_text(records: Iterable[list[str] | tuple[str, ...]]) -> str:
    buffer = io.StringIO()
    # Every cell quoted: a reader that splits on ";" still keeps "a;b" in one cell.
    csv.writer(buffer, quoting=csv.QUOTE_ALL).writerows(records)
    return buffer.getvalue()


async def csv_chunks(batches: AsyncIterator[list[Line]]) -> AsyncIterator[str]:
    """The CSV document, one chunk per batch of lines."""
    yield csv_text([CSV_COLUMNS])
    async for batch in batches:
        yield csv_text(csv_record(line) for line in batch)


async def json_chunks(batches: AsyncIterator[list[Line]], header: dict[str, Any]) -> AsyncIterator[str]:
    """`{...header, "messages": [...]}`, written as the lines arrive."""
    opening = json.dumps(header, ensure_ascii=False)[:-1]
    yield (opening + ", " if header else "{") + '"messages": ['
    first = True
    async for batch in batches:
        parts = [json.dumps(line.as_dict(), ensure_ascii=False) for line in batch]
        if parts:
            yield ("\n" if first else ",\n") + ",\n".join(parts)
            first = False
    yield "\n]}\n"


def transcript_csv(transcript: Transcript) -> str:
    """One conversation in the same CSV shape as the date-range export: a file opens like the other."""
    return csv_text([CSV_COLUMNS, *(csv_record(line) for line in transcript.lines)])


# Everything a text viewer may start a new line at: \r alone, \n, \r\n, and the Unicode line breaks.
LINE_BREAKS = re.compile(r"\r\n|[\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


def one_line(value: object) -> str:
    """Typed text that must stay on its line (a header fact, a name): line breaks become spaces."""
    return LINE_BREAKS.sub(" ", str(value))


def transcript_text(transcript: Transcript) -> str:
    """A transcript as plain text: a header of facts, then one entry per message."""
    c = transcript.conversation
    facts = [
        ("Site", transcript.site_name),
        ("Conversation", c.id),
        ("Customer", f"{c.customer_name} <{c.customer_email}>" if c.customer_email else c.customer_name),
        ("Agent", c.agent_name or "none"),
        ("Team", c.team_name or "none"),
        ("Status", c.status),
        ("Started", format_time(c.created_at, seconds=True)),
        ("Closed", format_time(c.closed_at, seconds=True) or "not yet"),
        ("Duration", format_duration(c.duration_seconds()) if c.closed_at else "ongoing"),
    ]
    if c.rating_score is not None:
        comment = f' ("{one_line(c.rating_comment)}")' if c.rating_comment else ""
        facts.append(("Rating", f"{c.rating_score}/5{comment}"))
    out = [f"{label}: {one_line(value)}" for label, value in facts]
    out.append("")
    for line in transcript.lines:
        label = line.author_kind + (f", {line.label}" if line.label else "")
        # Continuation lines are indented, so no body can start a line that looks like an entry.
        body = "\n    ".join(LINE_BREAKS.split(line.body))
        out.append(f"[{format_time(line.sent_at, seconds=True)}] {one_line(line.author_name)} ({label}): {body}")
    return "\n".join(out) + "\n"

"""The published definitions (docs/reports.md), as pure functions over the event timeline.

Nothing here reads the store or the clock: the same events always give the same figures, which is what
lets the tests check them against numbers worked out by hand.

- queue wait: the first `queued` → the first `assigned` (a conversation that was never assigned has none);
- first response: the visitor's first message → the first public agent message (`first_reply`; system
  lines and private notes are never replies). The first message opens the conversation, so it is measured
  from the conversation's opening (milliseconds before the message is stored);
- handle time: from each `assigned` to the `transfer`, requeue or `closed` that ends that agent's part,
  credited to that agent; the conversation's handle time is the sum of its parts;
- abandoned: the visitor left while queued (`left`); under QUICK_ABANDON_SECONDS counted apart;
- missed: ended without any agent ever assigned (abandoned ones included);
- CSAT: the share of ratings that are 4 or 5; response rate: ratings / conversations closed by an agent.
  A rating is credited to the agent who served at close (the `rated` event carries them).
Distributions are given as median and 90th percentile (linear interpolation between ranks, like
PostgreSQL's percentile_cont), never as means: one chat left open over lunch would move a mean for days.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo
from typing import Any

from nameplate.desk.transcripts import as_utc
from nameplate.protocol.vocabulary import EventKind

QUICK_ABANDON_SECONDS = 10.0
SATISFIED_SCORES = frozenset({4, 5})


@dataclass(frozen=True)
class Event:
    """The columns of an InsightEvent the metrics need (rows from the store or a fixture)."""

    conversation_id: str
    kind: str
    at: datetime
    team_id: str | None = None
    agent_id: str | None = None
    value: float | None = None
    detail: str | None = None

    @classmethod
    def of(cls, row: Any) -> Event:
        return cls(row.conversation_id, row.kind, as_utc(row.at), row.team_id, row.agent_id, row.value, row.detail)


@dataclass
class Facts:
    """One conversation as the reports see it, derived from its events alone."""

    conversation_id: str
    started_at: datetime
    team_id: str | None = None
    wait_s: float | None = None
    first_agent: str | None = None
    first_response_s: float | None = None
    first_response_agent: str | None = None
    handled: dict[str, float] = field(default_factory=dict)
    abandoned: bool = False
    abandon_wait_s: float | None = None
    page: str | None = None
    left_at: datetime | None = None
    closed_at: datetime | None = None
    closed_by: str | None = None
    score: int | None = None
    rated_agent: str | None = None
    rated_team: str | None = None

    @property
    def served(self) -> bool:
        return self.first_agent is not None

    @property
    def missed(self) -> bool:
        return not self.served and (self.closed_at is not None or self.abandoned)

    @property
    def handle_s(self) -> float | None:
        return sum(self.handled.values()) if self.handled else None

    @property
    def quick_abandon(self) -> bool:
        return self.abandoned and (self.abandon_wait_s or 0.0) < QUICK_ABANDON_SECONDS


def facts_of(events: Iterable[Event]) -> Facts | None:
    """Walk one conversation's events in order (as stored: by id). None if it was never queued."""
    facts: Facts | None = None
    queued_since: datetime | None = None
    holder: str | None = None
    holder_since: datetime | None = None

    def end_part(at: datetime) -> None:
        nonlocal holder, holder_since
        if facts is not None and holder is not None and holder_since is not None:
            facts.handled[holder] = facts.handled.get(holder, 0.0) + (at - holder_since).total_seconds()
        holder, holder_since = None, None

    for event in events:
        if facts is None:
            if event.kind != EventKind.queued:
                continue
            facts = Facts(event.conversation_id, event.at)
        kind = event.kind
        if kind != EventKind.rated:
            facts.team_id = event.team_id  # the team it is with now (a transfer to a team moves it)
        if kind == EventKind.queued:
            end_part(event.at)
            queued_since = event.at
        elif kind == EventKind.assigned:
            end_part(event.at)
            if facts.first_agent is None and event.agent_id is not None:
                facts.first_agent = event.agent_id
                if queued_since is not None:
                    facts.wait_s = (event.at - facts.started_at).total_seconds()
            holder, holder_since = event.agent_id, event.at
            queued_since = None
        elif kind == EventKind.first_reply:
            if facts.first_response_s is None:
                facts.first_response_s = (
                    event.value if event.value is not None else (event.at - facts.started_at).total_seconds()
                )
                facts.first_response_agent = event.agent_id
        elif kind == EventKind.transfer:
            end_part(event.at)
        elif kind == EventKind.left:
            facts.abandoned = True
            facts.left_at = event.at
            facts.page = event.detail
            since = queued_since or facts.started_at
            facts.abandon_wait_s = event.value if event.value is not None else (event.at - since).total_seconds()
        elif kind == EventKind.closed:
            end_part(event.at)
            facts.closed_at = event.at
            facts.closed_by = event.agent_id
        elif kind == EventKind.rated and event.value is not None:
            # A changed rating replaces the earlier one.
            facts.score = int(event.value)
            facts.rated_agent = event.agent_id
            facts.rated_team = event.team_id
    return facts


def facts_by_conversation(events: Iterable[Event]) -> list[Facts]:
    """Facts for every conversation in `events` (each conversation's events in stored order)."""
    grouped: dict[str, list[Event]] = {}
    for event in events:
        grouped.setdefault(event.conversation_id, []).append(event)
    found = (facts_of(group) for group in grouped.values())
    return sorted((f for f in found if f is not None), key=lambda f: (f.started_at, f.conversation_id))


def percentile(values: list[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks (percentile_cont); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = fraction * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Spread:
    count: int
    median: float | None
    p90: float | None

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Spread:
        present = [v for v in values if v is not None]
        return cls(len(present), percentile(present, 0.5), percentile(present, 0.9))


@dataclass(frozen=True)
class Figures:
    chats: int
    served: int
    wait: Spread
    first_response: Spread
    handle: Spread
    abandoned: int
    quick_abandoned: int
    abandon_wait: Spread
    missed: int
    closed: int
    ratings: int
    satisfied: int

    @property
    def csat(self) -> float | None:
        return self.satisfied / self.ratings if self.ratings else None

    @property
    def response_rate(self) -> float | None:
        return self.ratings / self.closed if self.closed else None


def figures(facts: list[Facts]) -> Figures:
    """The figures of a set of conversations (a day, a team, the whole period)."""
    rated = [f for f in facts if f.score is not None]
    return Figures(
        chats=len(facts),
        served=sum(f.served for f in facts),
        wait=Spread.of(f.wait_s for f in facts),
        first_response=Spread.of(f.first_response_s for f in facts),
        handle=Spread.of(f.handle_s for f in facts),
        abandoned=sum(f.abandoned for f in facts),
        quick_abandoned=sum(f.quick_abandon for f in facts),
        abandon_wait=Spread.of(f.abandon_wait_s for f in facts if f.abandoned),
        missed=sum(f.missed for f in facts),
        closed=sum(f.closed_by is not None for f in facts),
        ratings=len(rated),
        satisfied=sum(f.score in SATISFIED_SCORES for f in rated),
    )


def agent_figures(facts: list[Facts], agent_id: str) -> Figures:
    """An agent's figures: the chats they took part in, each measure credited as published — the wait to the
    agent who first took the chat, the first response to whoever sent it, handle time to each agent for
    their part, a rating and a close to whoever served at close."""
    mine = [f for f in facts if agent_id in f.handled or f.closed_by == agent_id or f.rated_agent == agent_id]
    rated = [f for f in mine if f.rated_agent == agent_id and f.score is not None]
    return Figures(
        chats=len(mine),
        served=sum(f.first_agent == agent_id for f in mine),
        wait=Spread.of(f.wait_s for f in mine if f.first_agent == agent_id),
        first_response=Spread.of(f.first_response_s for f in mine if f.first_response_agent == agent_id),
        handle=Spread.of(f.handled.get(agent_id) for f in mine),
        abandoned=0,
        quick_abandoned=0,
        abandon_wait=Spread.of([]),
        missed=0,
        closed=sum(f.closed_by == agent_id for f in mine),
        ratings=len(rated),
        satisfied=sum(f.score in SATISFIED_SCORES for f in rated),
    )


def local_day(moment: datetime, zone: tzinfo) -> date:
    return moment.astimezone(zone).date()


# Drill-down: which conversations stand behind a figure.
METRICS: dict[str, Callable[[Facts], bool]] = {
    "chats": lambda f: True,
    "served": lambda f: f.served,
    "waited": lambda f: f.wait_s is not None,
    "replied": lambda f: f.first_response_s is not None,
    "handled": lambda f: bool(f.handled),
    "abandoned": lambda f: f.abandoned,
    "quick_abandoned": lambda f: f.quick_abandon,
    "missed": lambda f: f.missed,
    "closed": lambda f: f.closed_by is not None,
    "rated": lambda f: f.score is not None,
    "satisfied": lambda f: f.score in SATISFIED_SCORES,
}


def behind(
    facts: list[Facts],
    metric: str,
    zone: tzinfo,
    day: date | None = None,
    agent_id: str | None = None,
    team_id: str | None = None,
) -> list[Facts]:
    """The conversations counted by `metric` on `day`, for `agent_id` or `team_id` (any of them optional)."""
    test = METRICS[metric]
    chosen = []
    for f in facts:
        if day is not None and local_day(f.started_at, zone) != day:
            continue
        if team_id is not None and f.team_id != team_id:
            continue
        if agent_id is not None and not (agent_id in f.handled or f.closed_by == agent_id or f.rated_agent == agent_id):
            continue
        if agent_id is not None and metric in ("rated", "satisfied") and f.rated_agent != agent_id:
            continue
        if agent_id is not None and metric == "closed" and f.closed_by != agent_id:
            continue
        if test(f):
            chosen.append(f)
    return chosen

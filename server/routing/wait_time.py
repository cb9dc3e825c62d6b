"""Honest expected waits: from the agents on duty and how long chats have really been taking."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from nameplate.insight.metrics import Event, facts_by_conversation
from nameplate.protocol.vocabulary import Presence
from nameplate.routing.plan import AgentState, QueueEntry

# With no history yet, assume a chat takes 3 minutes: a common figure for live chat.
DEFAULT_HANDLE_SECONDS = 180.0
# How many recent chats a handle time is the mean of (the site's, and each team's).
HANDLE_TIME_SAMPLE = 50
# Below this many recent chats a team's mean is mostly noise (one long chat moves it by minutes): the
# site's mean stands in until the team has this many.
MIN_TEAM_SAMPLES = 5


def available_count(agents: Iterable[AgentState]) -> int:
    """Agents who can take a chat now. Away is not "online" to a visitor: an Away agent answers no one."""
    return sum(1 for a in agents if a.status == Presence.available)


def expected_wait_seconds(position: int, agents: Iterable[AgentState], handle_seconds: float) -> int | None:
    """Seconds until the visitor at `position` (1-based) is likely to be answered; None when no agent is
    on duty, because any number would be a guess.

    Free slots take the first visitors at once. Past those, every busy slot frees up about once per
    handling time, so the queue moves `slots / handle_seconds` places a second.
    """
    on_duty = [a for a in agents if a.status == Presence.available]
    if not on_duty:
        return None
    slots = sum(a.capacity for a in on_duty)
    if slots <= 0:
        return None
    free = sum(max(0, a.capacity - a.load) for a in on_duty)
    if position <= free:
        return 0
    return round((position - free) * handle_seconds / slots)


def estimate_waits(queue: list[QueueEntry], agents: list[AgentState], handle: HandleTimes) -> list[int | None]:
    """The expected wait of every queued visitor (the queue longest-waiting first), as the server shows it.

    A visitor holding out for one agent waits for that agent alone. A visitor queued for a team is answered
    only by that team's agents (routing.plan), at that team's pace, behind the visitors ahead who compete
    for the same agents (the team's and the untagged ones); an untagged visitor is behind everyone ahead.
    """
    waits: list[int | None] = []
    for index, entry in enumerate(queue):
        if entry.only_preferred and entry.preferred_agent_id:
            mine = [a for a in agents if a.agent_id == entry.preferred_agent_id]
            waits.append(expected_wait_seconds(1 if mine and not mine[0].has_room else 0, mine, handle.site))
        elif entry.team_id is not None:
            team = [a for a in agents if entry.team_id in a.teams]
            ahead = sum(1 for e in queue[:index] if e.team_id in (None, entry.team_id))
            waits.append(expected_wait_seconds(ahead + 1, team, handle.of(entry.team_id)))
        else:
            waits.append(expected_wait_seconds(index + 1, agents, handle.site))
    return waits


def describe_wait(seconds: int | None) -> str:
    """The one sentence for an expected wait that the widget, the console and the live board all show: an
    estimate said as one ("about 4 minutes"), and "in a moment" only when a free agent takes the chat now."""
    if seconds is None:
        return "no one is available to answer yet"
    if seconds <= 0:
        return "someone will be with you in a moment"
    return _about(seconds)


def describe_offer_wait(name: str, seconds: int) -> str:
    """The offer's choice to wait for the previous agent, in the same words as every other wait (the
    previous agent is full, so this is never "in a moment")."""
    return f"Wait for {name} ({_about(max(1, seconds))})"


def describe_seconds(seconds: float) -> str:
    """A short, exact span for what the visitor is promised ("30 seconds", "2 minutes")."""
    whole = max(1, round(seconds))
    if whole < 120:
        return f"{whole} second" + ("s" if whole != 1 else "")
    return f"{round(whole / 60)} minutes"


def _about(seconds: int) -> str:
    if seconds < 60:
        return "less than a minute"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"about {minutes} minute" + ("s" if minutes > 1 else "")
    return f"about {round(minutes / 60)} hours"


def mean_handle_seconds(durations: list[float]) -> float:
    useful = [d for d in durations if d > 0]
    return sum(useful) / len(useful) if useful else DEFAULT_HANDLE_SECONDS


@dataclass(frozen=True)
class HandleTimes:
    """Recent mean handle times of a site and of each of its teams with enough chats to say."""

    site: float = DEFAULT_HANDLE_SECONDS
    teams: dict[str, float] = field(default_factory=dict)

    def of(self, team_id: str | None) -> float:
        """The team's own mean when it has one (a billing chat is not a sales chat), else the site's."""
        return self.teams.get(team_id, self.site) if team_id is not None else self.site

    @classmethod
    def of_events(cls, events: Iterable[Event]) -> HandleTimes:
        """From the event record of recently closed chats (insight.metrics' facts: a chat's handle time
        is every agent's part summed, so a transfer neither resets nor splits it), newest close first."""
        facts = [f for f in facts_by_conversation(events) if f.handle_s is not None and f.closed_at is not None]
        facts.sort(key=lambda f: f.closed_at or f.started_at, reverse=True)
        return cls.of_chats((f.team_id, f.handle_s or 0.0) for f in facts)

    @classmethod
    def of_chats(cls, chats: Iterable[tuple[str | None, float]]) -> HandleTimes:
        """From (team id, handle seconds) of closed chats, newest first: the site's mean over its latest
        `HANDLE_TIME_SAMPLE`, each team's over its own latest `HANDLE_TIME_SAMPLE` once it has
        `MIN_TEAM_SAMPLES`."""
        site: list[float] = []
        by_team: dict[str, list[float]] = {}
        for team_id, seconds in chats:
            if seconds <= 0:
                continue
            if len(site) < HANDLE_TIME_SAMPLE:
                site.append(seconds)
            if team_id is not None:
                mine = by_team.setdefault(team_id, [])
                if len(mine) < HANDLE_TIME_SAMPLE:
                    mine.append(seconds)
        return cls(
            mean_handle_seconds(site),
            {team: mean_handle_seconds(d) for team, d in by_team.items() if len(d) >= MIN_TEAM_SAMPLES},
        )

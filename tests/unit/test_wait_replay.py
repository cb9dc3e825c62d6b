"""A recorded day of arrivals and departures, replayed through the server's own estimator: the median error of
the expected wait a visitor is shown, against the wait they then had, stays within a bound.

The day is tests/fixtures/recorded_day_*.csv (made once by tests/fixtures/make_recorded_day.py: peaks, a
long tail of chat lengths, agents on staggered shifts). The replay pairs visitors with agents with the
server's pairing rules (routing.plan.plan_assignments), keeps the event record the server keeps (queued,
assigned, closed: insight.metrics' Events) and, as the router does, re-reads the handle times from it once a
minute (wait_time.HandleTimes.of_events); each visitor who has to queue is shown wait_time.estimate_waits'
figure for their place, exactly what the `queue` frame carries.
"""

from __future__ import annotations

import csv
import heapq
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from nameplate.insight.metrics import Event
from nameplate.protocol.vocabulary import EventKind, Presence
from nameplate.routing.plan import AgentState, QueueEntry, plan_assignments
from nameplate.routing.router import HANDLE_TIME_CHATS, HANDLE_TIME_TTL_SECONDS
from nameplate.routing.wait_time import HandleTimes, estimate_waits, expected_wait_seconds

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MIDNIGHT = datetime(2026, 12, 3, tzinfo=UTC)
# The widget says "less than a minute" below a minute and whole minutes above: an error is judged against
# at least a minute, so that 10 s shown for a 3 s wait does not count as 233 % wrong.
FLOOR_S = 60.0

# The bound on the median of |shown - actual| / max(actual, 1 min). A visitor's wait is random: it ends when
# one of the running chats ends, so even the exact mean is far from most single waits (for the first in line,
# with chats ending at random, the median of |wait / mean - 1| is about 0.63). An honest estimate can only be
# right on average and within that spread; half its size is what "about N minutes" may be off by. Measured on
# the recorded day: 0.32 for the server's estimator, 0.65 for one that ignores the place in line.
BOUND = 0.5

Estimator = Callable[[list[QueueEntry], list[AgentState], HandleTimes], list[int | None]]


@dataclass
class Day:
    arrivals: list[tuple[int, int]]  # (second of the day, handle seconds)
    shifts: list[tuple[str, int, int, int]]  # (agent, from, until, capacity)


def recorded_day() -> Day:
    with (FIXTURES / "recorded_day_arrivals.csv").open() as rows:
        arrivals = [(int(r["arrived_s"]), int(r["handle_s"])) for r in csv.DictReader(rows)]
    with (FIXTURES / "recorded_day_shifts.csv").open() as rows:
        shifts = [(r["agent"], int(r["starts_s"]), int(r["ends_s"]), int(r["capacity"])) for r in csv.DictReader(rows)]
    return Day(arrivals, shifts)


@dataclass
class Replay:
    """What the replay saw: for each visitor who had to queue, the wait shown at arrival and the real one."""

    shown: list[int] = field(default_factory=list)
    actual: list[float] = field(default_factory=list)
    unknown: int = 0  # queued with no agent on duty: the visitor is told so, no number to judge

    def median_error(self) -> float:
        return statistics.median(abs(s - a) / max(a, FLOOR_S) for s, a in zip(self.shown, self.actual, strict=True))


def replay(day: Day, estimate: Estimator = estimate_waits) -> Replay:
    ARRIVE, FINISH, SHIFT = 1, 0, 2  # at the same second a chat ends before the next one is handed out
    timeline: list[tuple[float, int, int, str]] = []
    for n, (at, _) in enumerate(day.arrivals):
        heapq.heappush(timeline, (at, ARRIVE, n, f"v{n}"))
    for agent, starts, ends, _ in day.shifts:
        heapq.heappush(timeline, (starts, SHIFT, 0, agent))
        heapq.heappush(timeline, (ends, SHIFT, 1, agent))
    capacity = {agent: cap for agent, _, _, cap in day.shifts}
    agents: dict[str, AgentState] = {}
    queue: list[QueueEntry] = []
    arrived: dict[str, float] = {}
    shown: dict[str, int | None] = {}
    events: list[Event] = []
    closed: list[str] = []  # conversation ids, in close order
    cached: tuple[float, HandleTimes] = (-1.0, HandleTimes())
    result = Replay()

    def at(second: float) -> datetime:
        return MIDNIGHT + timedelta(seconds=second)

    def handle_times(now: float) -> HandleTimes:
        nonlocal cached
        if cached[0] <= now:  # the router's cache: re-read at most once a minute
            recent = set(closed[-HANDLE_TIME_CHATS:])
            times = HandleTimes.of_events(e for e in events if e.conversation_id in recent)
            cached = (now + HANDLE_TIME_TTL_SECONDS, times)
        return cached[1]

    def pair(now: float) -> None:
        for conversation, agent in plan_assignments(queue, list(agents.values()), now):
            queue[:] = [e for e in queue if e.conversation_id != conversation]
            state = agents[agent]
            agents[agent] = replace(state, conversations=state.conversations | {conversation}, last_assigned_at=now)
            events.append(Event(conversation, EventKind.assigned, at(now), agent_id=agent))
            waited = now - arrived[conversation]
            if shown.get(conversation, 0) is None:
                result.unknown += 1
            elif conversation in shown:
                result.shown.append(shown[conversation] or 0)
                result.actual.append(waited)
            n = int(conversation[1:])
            heapq.heappush(timeline, (now + day.arrivals[n][1], FINISH, n, f"{agent}:{conversation}"))

    while timeline:
        now, kind, n, what = heapq.heappop(timeline)
        if kind == ARRIVE:
            arrived[what] = now
            events.append(Event(what, EventKind.queued, at(now)))
            queue.append(QueueEntry(what, now))
            pair(now)
            if queue and queue[-1].conversation_id == what:
                # Not answered at once: the first `queue` frame this visitor gets.
                shown[what] = estimate(queue, list(agents.values()), handle_times(now))[-1]
        elif kind == FINISH:
            agent, conversation = what.split(":")
            state = agents[agent]
            agents[agent] = replace(state, conversations=state.conversations - {conversation})
            events.append(Event(conversation, EventKind.closed, at(now), agent_id=agent))
            closed.append(conversation)
            pair(now)
        elif n == 0:  # shift starts
            agents[what] = AgentState(what, Presence.available, capacity[what], last_assigned_at=now)
            pair(now)
        else:  # shift ends: no new chats; the running ones are finished
            agents[what] = replace(agents[what], status=Presence.away)
    return result


def ignoring_position(queue: list[QueueEntry], agents: list[AgentState], handle: HandleTimes) -> list[int | None]:
    """A broken estimator: everyone is told the wait of the first in line."""
    return [expected_wait_seconds(1, agents, handle.site) for _ in queue]


def test_the_recorded_day_makes_visitors_wait_at_its_peaks() -> None:
    day = recorded_day()
    seen = replay(day)
    assert len(day.arrivals) > 400
    assert len(seen.actual) > 100, "the fixture should make enough visitors queue to judge the estimate"
    assert max(seen.actual) > 10 * 60


def test_the_estimate_shown_is_within_the_bound_of_the_wait_then_had() -> None:
    error = replay(recorded_day()).median_error()
    assert error < BOUND, error


def test_an_estimator_that_ignores_the_place_in_line_fails_the_bound() -> None:
    error = replay(recorded_day(), ignoring_position).median_error()
    assert error >= BOUND, error

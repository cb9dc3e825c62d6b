"""The published definitions against figures worked out by hand (see the timeline drawn in each test)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from nameplate.insight.metrics import (
    Event,
    agent_figures,
    behind,
    facts_by_conversation,
    figures,
    local_day,
    percentile,
)

JANE, TOMAS, SUPPORT = "jane", "tomas", "support"
BERLIN = ZoneInfo("Europe/Berlin")  # UTC+1 in December


def at(hour: int, minute: int = 0, second: int = 0, day: int = 1) -> datetime:
    return datetime(2026, 12, day, hour, minute, second, tzinfo=UTC)


def ev(cid: str, kind: str, moment: datetime, agent: str | None = None, value: float | None = None) -> Event:
    return Event(cid, kind, moment, SUPPORT, agent, value)


# c1: waits 30 s for Jane, who answers 45 s after the visitor's first message and hands over to Tomas after
#     5 min; Tomas closes 5 min later; the visitor then rates 5 — credited to Tomas, who served at close.
# c2: waits 90 s for Jane, first reply after 20 s, Jane closes after 20 min; rated 2.
# c3: the visitor leaves after 5 s (a quick abandon); c4: leaves after 2 min.
# c5: queued at 23:30 UTC on Dec 1 = 00:30 on Dec 2 in Berlin; Tomas takes it after 10 s, closes after 10 min.
EVENTS = [
    ev("c1", "queued", at(9)),
    ev("c1", "assigned", at(9, 0, 30), JANE, 30),
    ev("c1", "first_reply", at(9, 0, 45), JANE, 45),
    ev("c1", "transfer", at(9, 5, 30), JANE),
    ev("c1", "assigned", at(9, 5, 30), TOMAS),
    ev("c1", "closed", at(9, 10, 30), TOMAS),
    ev("c2", "queued", at(10)),
    ev("c2", "assigned", at(10, 1, 30), JANE, 90),
    ev("c2", "first_reply", at(10, 1, 50), JANE, 20),
    ev("c2", "closed", at(10, 21, 30), JANE),
    ev("c2", "rated", at(10, 25), JANE, 2),
    ev("c1", "rated", at(11, 30), TOMAS, 5),
    ev("c3", "queued", at(11)),
    ev("c3", "left", at(11, 0, 5), None, 5),
    ev("c3", "closed", at(11, 0, 5)),
    ev("c4", "queued", at(12)),
    ev("c4", "left", at(12, 2), None, 120),
    ev("c4", "closed", at(12, 2)),
    ev("c5", "queued", at(23, 30)),
    ev("c5", "assigned", at(23, 30, 10), TOMAS, 10),
    ev("c5", "closed", at(23, 40, 10), TOMAS),
]


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([], 0.5) is None
    assert percentile([7.0], 0.9) == 7.0
    assert percentile([30.0, 90.0], 0.5) == 60.0
    assert percentile([30.0, 90.0], 0.9) == pytest.approx(84.0)
    assert percentile([1.0, 2.0, 3.0, 4.0, 100.0], 0.5) == 3.0  # a median is not moved by one outlier


def test_a_day_in_berlin_with_a_transfer_two_abandons_and_ratings() -> None:
    facts = facts_by_conversation(EVENTS)
    day_one = [f for f in facts if local_day(f.started_at, BERLIN) == date(2026, 12, 1)]
    assert [f.conversation_id for f in day_one] == ["c1", "c2", "c3", "c4"]
    day = figures(day_one)
    assert (day.chats, day.served, day.missed, day.abandoned, day.quick_abandoned) == (4, 2, 2, 2, 1)
    assert (day.wait.median, day.wait.p90) == (60.0, pytest.approx(84.0))
    assert (day.first_response.median, day.first_response.p90) == (32.5, pytest.approx(42.5))
    # Handle times: c1 = 5 min Jane + 5 min Tomas = 600 s; c2 = 1200 s.
    assert (day.handle.median, day.handle.p90) == (900.0, pytest.approx(1140.0))
    assert (day.abandon_wait.median, day.abandon_wait.count) == (62.5, 2)
    assert (day.closed, day.ratings, day.satisfied, day.csat, day.response_rate) == (2, 2, 1, 0.5, 1.0)


def test_time_zone_moves_a_late_chat_to_the_next_day() -> None:
    facts = facts_by_conversation(EVENTS)
    assert local_day(facts[-1].started_at, BERLIN) == date(2026, 12, 2)
    assert local_day(facts[-1].started_at, UTC) == date(2026, 12, 1)
    assert [f.conversation_id for f in behind(facts, "chats", BERLIN, day=date(2026, 12, 2))] == ["c5"]
    assert len(behind(facts, "chats", ZoneInfo("UTC"), day=date(2026, 12, 1))) == 5


def test_per_agent_figures_split_handle_time_and_credit_the_rating_to_who_served_at_close() -> None:
    facts = facts_by_conversation(EVENTS)
    jane = agent_figures(facts, JANE)
    assert (jane.chats, jane.served, jane.closed) == (2, 2, 1)
    assert jane.wait.median == 60.0 and jane.first_response.median == 32.5
    assert (jane.handle.count, jane.handle.median) == (2, 750.0)  # 300 s of c1, 1200 s of c2
    assert (jane.ratings, jane.csat, jane.response_rate) == (1, 0.0, 1.0)  # c1's 5 is not hers
    tomas = agent_figures(facts, TOMAS)
    assert (tomas.chats, tomas.served, tomas.closed) == (2, 1, 2)
    assert (tomas.handle.median, tomas.wait.median, tomas.first_response.count) == (450.0, 10.0, 0)
    assert (tomas.ratings, tomas.csat, tomas.response_rate) == (1, 1.0, 0.5)
    assert [f.conversation_id for f in behind(facts, "rated", UTC, agent_id=TOMAS)] == ["c1"]
    assert [f.conversation_id for f in behind(facts, "closed", UTC, agent_id=JANE)] == ["c2"]


def test_a_requeue_ends_the_agents_part_and_the_wait_is_to_the_first_agent() -> None:
    start = at(14)
    events = [
        ev("r", "queued", start),
        ev("r", "assigned", start + timedelta(seconds=20), JANE, 20),
        ev("r", "queued", start + timedelta(seconds=80)),  # Jane went offline: back to the queue
        ev("r", "assigned", start + timedelta(seconds=100), TOMAS, 20),
        ev("r", "closed", start + timedelta(seconds=400), TOMAS),
    ]
    (facts,) = facts_by_conversation(events)
    assert facts.wait_s == 20.0
    assert facts.handled == {JANE: 60.0, TOMAS: 300.0}
    assert facts.first_agent == JANE and facts.closed_by == TOMAS and not facts.missed

from nameplate.routing.plan import AgentState, QueueEntry
from nameplate.routing.wait_time import (
    DEFAULT_HANDLE_SECONDS,
    HANDLE_TIME_SAMPLE,
    MIN_TEAM_SAMPLES,
    HandleTimes,
    estimate_waits,
    expected_wait_seconds,
    mean_handle_seconds,
)


def busy(agent_id: str, load: int, capacity: int = 3, status: str = "available") -> AgentState:
    return AgentState(agent_id, status, capacity, frozenset(f"{agent_id}{n}" for n in range(load)))


def test_no_agent_on_duty_means_no_estimate() -> None:
    assert expected_wait_seconds(1, [busy("a", 0, status="away")], 120) is None
    assert expected_wait_seconds(1, [], 120) is None


def test_free_slots_mean_no_wait() -> None:
    assert expected_wait_seconds(2, [busy("a", 1)], 120) == 0


def test_wait_grows_with_position_and_shrinks_with_slots() -> None:
    one_agent = [busy("a", 3)]
    two_agents = [busy("a", 3), busy("b", 3)]
    assert expected_wait_seconds(3, one_agent, 120) == 120
    assert expected_wait_seconds(6, one_agent, 120) == 240
    assert expected_wait_seconds(6, two_agents, 120) == 120


def test_mean_handle_time_ignores_nonsense_and_defaults() -> None:
    assert mean_handle_seconds([]) == DEFAULT_HANDLE_SECONDS
    assert mean_handle_seconds([60, 180, -5, 0]) == 120


def test_a_team_with_enough_recent_chats_has_its_own_handle_time_else_the_sites() -> None:
    chats = [("billing", 600.0)] * MIN_TEAM_SAMPLES + [("sales", 60.0)] * (MIN_TEAM_SAMPLES - 1) + [(None, 120.0)]
    times = HandleTimes.of_chats(chats)
    site = (MIN_TEAM_SAMPLES * 600.0 + (MIN_TEAM_SAMPLES - 1) * 60.0 + 120.0) / (2 * MIN_TEAM_SAMPLES)
    assert times.site == site and times.of(None) == site
    assert times.of("billing") == 600.0
    assert times.of("sales") == site  # too few to say: one long chat would move its mean by minutes
    assert times.of("no such team") == site


def test_handle_times_take_the_newest_chats() -> None:
    # Newest first: the site's mean is over its latest HANDLE_TIME_SAMPLE chats, older ones do not count.
    times = HandleTimes.of_chats([(None, 100.0)] * HANDLE_TIME_SAMPLE + [(None, 10_000.0)] * 10)
    assert times.site == 100.0
    assert HandleTimes.of_chats([]).site == DEFAULT_HANDLE_SECONDS


def test_a_team_visitor_waits_for_that_team_at_its_pace() -> None:
    billing = AgentState("b", "available", 2, frozenset({"b1", "b2"}), teams=frozenset({"billing"}))
    sales = AgentState("s", "available", 2, frozenset(), teams=frozenset({"sales"}))
    times = HandleTimes(site=100.0, teams={"billing": 600.0})
    queue = [
        QueueEntry("first", 1.0, team_id="sales"),
        QueueEntry("second", 2.0, team_id="billing"),
        QueueEntry("third", 3.0),
        QueueEntry("fourth", 4.0, team_id="billing"),
    ]
    waits = estimate_waits(queue, [billing, sales], times)
    # A free sales agent does not answer billing: billing's two slots are busy, 600 s each.
    assert waits[1] == expected_wait_seconds(1, [billing], 600.0) == 300
    # Behind the billing visitor and the untagged one (both may take billing's next slot), not the sales one.
    assert waits[3] == expected_wait_seconds(3, [billing], 600.0) == 900
    assert waits[0] == 0  # sales has room
    assert estimate_waits([QueueEntry("x", 1.0, team_id="returns")], [billing, sales], times) == [None]

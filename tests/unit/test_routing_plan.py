"""The pairing rules, tested without any I/O."""

from __future__ import annotations

from nameplate.routing.plan import AgentState, QueueEntry, plan_assignments, queue_order


def agent(
    agent_id: str,
    load: int = 0,
    capacity: int = 3,
    status: str = "available",
    idle: float = 0.0,
    teams: frozenset[str] = frozenset(),
) -> AgentState:
    return AgentState(agent_id, status, capacity, frozenset(f"{agent_id}-c{n}" for n in range(load)), teams, idle)


def entry(conversation_id: str, score: float, **kwargs: object) -> QueueEntry:
    return QueueEntry(conversation_id, score, **kwargs)  # type: ignore[arg-type]


def test_longest_waiting_goes_first_to_the_least_busy_agent() -> None:
    pairs = plan_assignments([entry("late", 20), entry("early", 10)], [agent("a", load=2), agent("b", load=1)], 99)
    # b takes the first; now both carry two chats and a has been idle longer.
    assert pairs == [("early", "b"), ("late", "a")]


def test_ties_in_load_go_to_the_longest_idle() -> None:
    pairs = plan_assignments([entry("c", 1)], [agent("recent", idle=50), agent("idle", idle=10)], 99)
    assert pairs == [("c", "idle")]


def test_capacity_is_never_exceeded_and_away_or_offline_agents_get_nothing() -> None:
    queue = [entry(f"c{n}", n) for n in range(10)]
    agents = [agent("a", load=2), agent("b", status="away"), agent("c", status="offline"), agent("d", capacity=1)]
    pairs = plan_assignments(queue, agents, 99)
    assert pairs == [("c0", "d"), ("c1", "a")]


def test_team_conversations_only_go_to_team_members_and_do_not_block_others() -> None:
    queue = [entry("billing-question", 1, team_id="billing"), entry("general", 2)]
    pairs = plan_assignments(queue, [agent("sales-only", teams=frozenset({"sales"}))], 99)
    assert pairs == [("general", "sales-only")]


def test_preferred_agent_wins_when_they_have_room() -> None:
    pairs = plan_assignments([entry("c", 1, preferred_agent_id="busy")], [agent("busy", load=2), agent("free")], 99)
    assert pairs == [("c", "busy")]
    full = plan_assignments([entry("c", 1, preferred_agent_id="busy")], [agent("busy", load=3), agent("free")], 99)
    assert full == [("c", "free")]


def test_waiting_only_for_the_preferred_agent_is_honoured() -> None:
    queue = [entry("c", 1, preferred_agent_id="busy", only_preferred=True)]
    assert plan_assignments(queue, [agent("busy", load=3), agent("free")], 99) == []
    assert plan_assignments(queue, [agent("busy", load=2), agent("free")], 99) == [("c", "busy")]


def test_queue_order_is_by_score() -> None:
    assert queue_order([entry("b", 2), entry("a", -1), entry("c", 5)]) == ["a", "b", "c"]

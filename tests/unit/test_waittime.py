from nameplate.routing.plan import AgentState
from nameplate.routing.wait_time import DEFAULT_HANDLE_SECONDS, expected_wait_seconds, mean_handle_seconds


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

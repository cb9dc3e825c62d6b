"""Under steady load, the expected wait we show is within ±50% of the wait visitors actually get.

A discrete-event simulation of the queue: Poisson arrivals, agents with capacity, exponential chat
lengths, first-come first-served. Each waiting visitor's estimate is taken at arrival exactly as the
server computes it (expected_wait_seconds with the mean of recent real handling times).
"""

from __future__ import annotations

import heapq
import random
import statistics

import pytest

from nameplate.routing.plan import AgentState
from nameplate.routing.wait_time import expected_wait_seconds, mean_handle_seconds


def simulate(agents: int, capacity: int, mean_handle: float, load: float, visitors: int, seed: int):  # noqa: ANN201
    rng = random.Random(seed)
    slots = agents * capacity
    arrival_rate = load * slots / mean_handle
    now = 0.0
    busy: list[float] = []  # finishing times of running chats (a heap)
    waiting: list[tuple[int, float, float | None]] = []  # (visitor, arrived, estimate)
    recent: list[float] = []
    estimates, actuals = [], []
    next_arrival = rng.expovariate(arrival_rate)
    arrived = 0

    def start_chat(at: float) -> None:
        duration = rng.expovariate(1 / mean_handle)
        recent.append(duration)
        del recent[:-50]
        heapq.heappush(busy, at + duration)

    while arrived < visitors or waiting:
        if arrived < visitors and (not busy or next_arrival <= busy[0]):
            now = next_arrival
            arrived += 1
            next_arrival = now + rng.expovariate(arrival_rate)
            if len(busy) < slots and not waiting:
                start_chat(now)
                continue
            load_per_agent = [min(capacity, max(0, len(busy) - i * capacity)) for i in range(agents)]
            states = [
                AgentState(f"a{i}", "available", capacity, frozenset(f"c{i}-{n}" for n in range(load_per_agent[i])))
                for i in range(agents)
            ]
            estimate = expected_wait_seconds(len(waiting) + 1, states, mean_handle_seconds(recent))
            waiting.append((arrived, now, estimate))
        else:
            now = heapq.heappop(busy)
            if waiting:
                _, came, estimate = waiting.pop(0)
                start_chat(now)
                if arrived > visitors // 10:  # skip the warm-up
                    estimates.append(estimate)
                    actuals.append(now - came)
    return estimates, actuals


@pytest.mark.parametrize(("agents", "capacity", "load"), [(5, 3, 0.9), (2, 3, 0.95), (10, 2, 0.85)])
def test_estimates_track_actual_waits_within_fifty_percent(agents: int, capacity: int, load: float) -> None:
    estimates, actuals = simulate(agents, capacity, mean_handle=240.0, load=load, visitors=6000, seed=7)
    assert len(actuals) > 300, "the simulated load should make visitors wait"
    ratio_of_means = statistics.mean(estimates) / statistics.mean(actuals)
    assert 0.5 <= ratio_of_means <= 1.5, ratio_of_means
    per_visitor = [e / a for e, a in zip(estimates, actuals, strict=True) if a > 0]
    assert 0.5 <= statistics.median(per_visitor) <= 1.5

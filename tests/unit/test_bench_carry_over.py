"""`python -m bench --keep-from`: what an earlier report contributes to this one."""

from __future__ import annotations

from typing import Any

from bench.cli import _carry_over


def earlier() -> dict[str, Any]:
    return {
        "started": "2026-12-01 08:00",
        "command": "python -m bench --scenario idle",
        "configs": {
            "embedded": {"description": "e", "processes": 1, "idle": {"kib": 18.0}, "pairs": {"p50": 0.6}},
            "pg-redis-2": {"description": "p", "processes": 2, "idle": {"kib": 18.1}},
        },
        "relay": {"p50": 0.2},
    }


def test_a_configuration_not_run_now_keeps_all_its_results_and_one_run_now_keeps_what_it_did_not_measure() -> None:
    now: dict[str, Any] = {
        "configs": {"pg-redis-2": {"description": "p", "processes": 2, "idle": {"kib": 17.9}}},
        "relay": None,
    }
    _carry_over(now, earlier(), {"idle"}, ["pg-redis-2"])
    assert now["configs"]["embedded"]["idle"] == {"kib": 18.0}
    assert now["configs"]["embedded"]["pairs"] == {"p50": 0.6}
    assert now["configs"]["pg-redis-2"]["idle"] == {"kib": 17.9}  # measured now: not overwritten
    assert now["relay"] == {"p50": 0.2}
    assert set(now["carried_over"]["parts"]) == {"embedded idle", "embedded pairs", "relay"}


def test_a_scenario_run_now_is_not_carried_over_for_the_configurations_run_now() -> None:
    now: dict[str, Any] = {
        "configs": {"embedded": {"description": "e", "processes": 1, "pairs": {"p50": 0.5}}},
        "relay": {"p50": 0.3},
    }
    _carry_over(now, earlier(), {"latency", "throughput"}, ["embedded"])
    assert now["configs"]["embedded"]["pairs"] == {"p50": 0.5}
    assert now["configs"]["embedded"]["idle"] == {"kib": 18.0}
    assert now["relay"] == {"p50": 0.3}

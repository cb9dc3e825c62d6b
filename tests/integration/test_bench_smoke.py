"""The benchmark's smoke run: `python -m bench --quick` on the embedded configuration.

A few dozen real sockets against a real server process for a few seconds. It asserts what must hold
whatever the machine's speed — nothing lost or duplicated (checked against the store), every socket
opened and kept, the report written with every field — and never how fast anything was.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.report import read_raw

REPO = Path(__file__).resolve().parents[2]
LATEST = REPO / "bench" / "results" / "latest.md"


def _stamp(path: Path) -> tuple[float, int] | None:
    return (path.stat().st_mtime, path.stat().st_size) if path.exists() else None


def _assert_clean_load(run: dict, label: str) -> None:
    assert run["sent"] > 0, label
    assert run["lost"] == 0 and run["duplicated"] == 0, (label, run)
    assert run["missing_acks"] == 0 and run["missing_deliveries"] == 0, (label, run)
    assert run["duplicate_acks"] == 0 and run["duplicate_deliveries"] == 0, (label, run)
    assert run["misrouted"] == 0 and run["dropped"] == 0 and run["send_failures"] == 0, (label, run)
    assert run["errors"] == {}, (label, run["errors"])
    assert run["ack"]["count"] == run["sent"] and run["delivered"]["count"] == run["sent"], (label, run)
    for part in ("ack", "delivered"):
        for key in ("p50", "p90", "p99", "max"):
            assert isinstance(run[part][key], float) and run[part][key] >= 0, (label, part, key)
    assert run["achieved_rate"] > 0 and run["server_cpu_pct"] and run["client_cpu_pct"] >= 0, label


def _assert_store_checked(run: dict, label: str) -> None:
    store = run["store"]
    assert store["acked"] == run["sent"], (label, store)
    assert store["rows"] == run["sent"], (label, store)
    assert store["not_stored"] == store["stored_twice"] == store["wrong_seq"] == store["stored_not_acked"] == 0, (
        label,
        store,
    )
    assert run["stored_before_ack_checked"] > 0 and run["stored_before_ack_missing"] == 0, (label, run)
    assert run["stored_before_ack_errors"] == 0, (label, run)


def test_quick_bench_run_loses_nothing_and_writes_every_field(tmp_path: Path) -> None:
    output = tmp_path / "report.md"
    before = _stamp(LATEST)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "REDIS_PREFIX", "SECRET_KEY")}
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--config", "embedded", "--output", str(output)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    assert _stamp(LATEST) == before, "the smoke run must not overwrite bench/results/latest.md"

    text = output.read_text()
    for heading in (
        "## Machine",
        "## Against the targets",
        "## 1. Idle capacity",
        "## 2. Delivery latency",
        "## 3. Stored throughput",
        "## Raw data",
    ):
        assert heading in text, heading
    assert "| bare relay |" in text and "| embedded |" in text
    data = read_raw(text)

    machine = data["machine"]
    for key in ("cpu_model", "cores", "python", "packages", "git_commit", "kernel", "memory_gib"):
        assert machine[key], key
    for package in ("websockets", "uvicorn", "starlette", "sqlalchemy"):
        assert machine["packages"][package] != "not installed", package
    assert data["load_average_start"] and data["load_average_end"] and data["wall_seconds"] > 0

    config = data["configs"]["embedded"]
    assert not any(key in config for key in ("skipped", "idle_error", "pairs_error")), config

    idle = config["idle"]
    assert idle["opened"] == idle["requested"] > 0 and idle["failed"] == 0, idle
    assert idle["still_open_after_hold"] == idle["opened"] and idle["dropped_during_hold"] == 0, idle
    (process,) = idle["processes"]
    assert process["connections"] == idle["opened"]
    for key in (
        "rss_before_mib",
        "rss_after_hold_mib",
        "peak_rss_mib",
        "kib_per_connection",
        "cpu_idle_pct",
        "cpu_ramp_pct",
    ):
        assert isinstance(process[key], float), key
    assert process["open_fds"] > idle["opened"]
    assert idle["frames_per_visitor_ramp"]["welcome"] == 1.0 and idle["frames_per_visitor_ramp"]["ack"] == 1.0

    pairs = config["pairs"]
    assert pairs["pairs_set_up"] >= 10 and pairs["sequence_problems"] == []
    latency = pairs["latency"]
    _assert_clean_load(latency, "latency")
    _assert_store_checked(latency, "latency")
    steps = pairs["throughput"]["steps"]
    assert steps, pairs["throughput"]
    for step in steps:
        _assert_clean_load(step, f"throughput {step['target_rate']}")
        _assert_store_checked(step, f"throughput {step['target_rate']}")
        assert isinstance(step["passed"], bool)
    assert "max_rate_p99_under_limit" in pairs["throughput"] and "stored_per_process" in pairs["throughput"]

    relay = data["relay"]
    _assert_clean_load(relay, "relay")
    assert relay["store"] is None

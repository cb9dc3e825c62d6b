"""The three measurements (idle capacity, delivery latency, stored throughput) and the relay baseline.

Each function brings up what it measures, runs a load bounded in count and time, takes it down again
and returns plain data for the report. Nothing here knows how the server works inside.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import profile
from bench.clients import IdleWorker, Workers
from bench.deploy import ConfigSpec, Deployment, SeededAgent, SiteSeed
from bench.procs import CpuMeter, Proc, hwm_kib, open_fds, rss_kib, start_relay, wait_for_quiet
from bench.stats import median_of, summary

# The agents' socket allows a burst of 30 messages, then 10 a second, and cannot be configured: the bench
# keeps every sender at or below this rate, so no message is refused for speed.
PER_SIDE_MAX_RATE = 5.0
# The highest rate counts only if its p99 send→delivered stays below this.
THROUGHPUT_P99_LIMIT_MS = 50.0
# With --profile, the idle ramp is sampled for its first seconds.
PROFILE_RAMP_SECONDS = 20.0


@dataclass
class Options:
    connections: int = 5000
    hold: float = 30.0
    per_site: int = 100
    per_client: int = 4500
    pairs: int = 100
    rate: float = 1000.0
    duration: float = 30.0
    steps: list[float] = field(default_factory=lambda: [100.0, 250.0, 500.0, 1000.0, 2000.0, 3000.0, 4000.0, 5000.0])
    step_duration: float = 10.0
    pair_clients: int = 2
    # Agents (and so pairs) per site for the pair loads: every agent socket gets every event of its site.
    agents_per_site: int = 10
    repeat: int = 1
    # After the last send, how long to wait for the last acks and deliveries before counting them lost.
    drain: float = 30.0
    body_chars: int = 80
    check_every: int = 200
    setup_concurrency: int = 50
    all_steps: bool = False
    # `connections` is per server process (a two-process configuration opens twice as many), so that every
    # configuration can be measured at the per-process target.
    per_process: bool = False
    # Pauses that let set-up fan-out and coalesced queue updates settle before a measurement starts.
    settle: float = 1.0
    # One deployment for every scenario of a configuration (--quick: saves a server start-up).
    share: bool = False
    # Record py-spy profiles of the server processes during the (first) latency run into this folder.
    profile: Path | None = None
    # Before each measured load, wait up to this long for the machine to be quiet (0: do not wait).
    wait_quiet: float = 0.0
    logs: Path | None = None


def pairs_for_rate(rate: float) -> int:
    """Pairs needed so that no sender exceeds PER_SIDE_MAX_RATE (each pair carries two senders)."""
    return max(1, math.ceil(rate / (2 * PER_SIDE_MAX_RATE)))


def split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- idle capacity ---------------------------------------------------------------------------------------
def idle_total(spec: ConfigSpec, options: Options) -> int:
    """How many idle visitor sockets this configuration opens in all."""
    return options.connections * (spec.processes if options.per_process else 1)


def idle_sites(spec: ConfigSpec, options: Options) -> list[SiteSeed]:
    """Idle visitors' sites (no agents) and one more for the warm-up."""
    count = math.ceil(idle_total(spec, options) / options.per_site)
    return [*(SiteSeed(f"bench-idle-{i}") for i in range(count)), SiteSeed("bench-warmup")]


def run_idle(spec: ConfigSpec, options: Options, deployment: Deployment) -> dict[str, Any]:
    """Open `connections` visitor sockets on the deployment's fresh server(s), hold them, measure."""
    workers: Workers | None = None
    servers = deployment.servers
    try:
        n = idle_total(spec, options)
        sites = [site for site in idle_sites(spec, options) if site.key != "bench-warmup"]
        # Warm-up: the first sockets pay for lazy imports, compiled queries and caches, once per process.
        for server in servers:
            asyncio.run(_warm_up(server))
        time.sleep(2 * options.settle)
        rss_before = {s.name: rss_kib(s.pid) for s in servers}
        # Sites alternate between processes (half the visitors on each when there are two); each worker
        # gets whole sites, at most `per_client` sockets.
        plan: list[list[dict[str, Any]]] = [[]]
        load = 0
        for index, site in enumerate(sites):
            count = min(options.per_site, n - index * options.per_site)
            if load + count > options.per_client:
                plan.append([])
                load = 0
            plan[-1].append({"base": servers[index % len(servers)].base_url, "site": site.key, "count": count})
            load += count
        quiet = wait_for_quiet(options.wait_quiet) if options.wait_quiet > 0 else None
        _log(f"idle/{spec.name}: opening {n} visitor sockets from {len(plan)} client processes")
        workers = Workers("idle", len(plan))
        ramp_limit = max(120.0, n / 10.0)  # bounded: at least 10 visitors a second, or the ramp fails
        meter = CpuMeter([s.pid for s in servers])
        workers.send(
            "open",
            [
                {"targets": targets, "concurrency": options.setup_concurrency, "timeout": ramp_limit, "label": "idle"}
                for targets in plan
            ],
        )
        recorders = None
        if options.profile is not None:
            # The ramp (hello + first message for every visitor, as after a deploy's reconnect storm).
            recorders = profile.start(
                [(f"{spec.name}-ramp-{s.name.rsplit('-', 1)[-1]}", s.pid) for s in servers],
                PROFILE_RAMP_SECONDS,
                options.profile,
            )
        opened = workers.collect("open", timeout=ramp_limit + 60)
        ramp_cpu = meter.percent()
        ramp_profile = profile.finish(recorders, PROFILE_RAMP_SECONDS) if recorders else None
        ramp_seconds = max(r["seconds"] for r in opened)
        ramp_frames = workers.call("stats", [{"reset": True}] * len(plan), timeout=60)
        time.sleep(options.settle)  # coalesced queue updates (50 ms) and their frames settle
        rss_ramp = {s.name: rss_kib(s.pid) for s in servers}
        per_server = Counter()
        for result in opened:
            for base, count in result["opened_by_base"].items():
                per_server[base] += count
        _log(
            f"idle/{spec.name}: {sum(per_server.values())} open after {ramp_seconds:.1f}s; holding {options.hold:.0f}s"
        )
        meter = CpuMeter([s.pid for s in servers] + workers.pids)
        hold_recorders = None
        if options.profile is not None:
            hold_recorders = profile.start(
                [(f"{spec.name}-hold-{s.name.rsplit('-', 1)[-1]}", s.pid) for s in servers],
                options.hold,
                options.profile,
            )
        time.sleep(options.hold)
        hold_cpu = meter.percent()
        hold_machine = meter.machine_percent()
        rss_after = {s.name: rss_kib(s.pid) for s in servers}
        hwm = {s.name: hwm_kib(s.pid) for s in servers}
        fds = {s.name: open_fds(s.pid) for s in servers}
        held = workers.call("stats", [{}] * len(plan), timeout=60)
        if hold_recorders:
            ramp_profile = {**(ramp_profile or {}), **profile.finish(hold_recorders, options.hold)}
        failures: Counter[str] = Counter()
        for result in opened:
            failures.update(result["failures"])
        processes = []
        for server in servers:
            connections = per_server.get(server.base_url, 0)
            grown = rss_after[server.name] - rss_before[server.name]
            processes.append(
                {
                    "name": server.name,
                    "connections": connections,
                    "rss_before_mib": rss_before[server.name] / 1024,
                    "rss_after_ramp_mib": rss_ramp[server.name] / 1024,
                    "rss_after_hold_mib": rss_after[server.name] / 1024,
                    "peak_rss_mib": hwm[server.name] / 1024,
                    "kib_per_connection": grown / connections if connections else None,
                    "cpu_idle_pct": hold_cpu[server.pid],
                    "cpu_ramp_pct": ramp_cpu[server.pid],
                    "open_fds": fds[server.name],
                }
            )
        frames_ramp = _merge_counters(r["frames"] for r in ramp_frames)
        frames_hold = _merge_counters(r["frames"] for r in held)
        opened_total = sum(per_server.values())
        return {
            "config": spec.name,
            "requested": n,
            "opened": opened_total,
            "failed": sum(failures.values()),
            "failures": dict(failures.most_common(5)),
            "still_open_after_hold": sum(r["open"] for r in held),
            "dropped_during_hold": sum(r["dropped"] for r in held),
            "close_codes": _merge_counters(r["close_codes"] for r in held),
            "sites": len(sites),
            "visitors_per_site": options.per_site,
            "client_processes": len(plan),
            "ramp_seconds": ramp_seconds,
            "ramp_per_second": opened_total / ramp_seconds if ramp_seconds else None,
            "hold_seconds": options.hold,
            "frames_per_visitor_ramp": {k: v / max(1, opened_total) for k, v in frames_ramp.items()},
            "frames_per_visitor_hold": {k: v / max(1, opened_total) for k, v in frames_hold.items()},
            "client_cpu_hold_pct": sum(hold_cpu[pid] for pid in workers.pids),
            "machine_busy_hold_pct": hold_machine,
            "quiet_wait": quiet,
            "processes": processes,
            "kib_per_connection": max((p["kib_per_connection"] or 0) for p in processes),
            **({"ramp_profile": ramp_profile} if ramp_profile else {}),
            "cpu_idle_pct": max(p["cpu_idle_pct"] for p in processes),
        }
    finally:
        if workers is not None:
            workers.close()


async def _warm_up(server: Proc, count: int = 20) -> None:
    worker = IdleWorker(999)
    result = await worker.open([{"base": server.base_url, "site": "bench-warmup", "count": count}], 10, 60, "warm")
    await worker.close_all()
    if result["failed"]:
        raise RuntimeError(f"warm-up failed on {server.name}: {result['failures']}")


def _merge_counters(counters: Any) -> dict[str, int]:
    total: Counter[str] = Counter()
    for counter in counters:
        total.update(counter)
    return dict(total)


# -- latency and throughput --------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairPlan:
    needed: int
    clients: int
    per_worker: list[int]
    sites: list[SiteSeed]
    worker_sites: list[list[SiteSeed]]


def pair_plan(options: Options, latency: bool, throughput: bool) -> PairPlan:
    """How many pairs the loads need, over how many client processes. Pairs live in small sites (each client
    process its own sites) with one agent per pair (capacity 1), so every pair is routed within its site and
    within its client process. Small sites, because every agent socket of a site receives every site event."""
    needed = max([options.pairs, pairs_for_rate(options.rate)] if latency else [1])
    if throughput:
        needed = max(needed, pairs_for_rate(max(options.steps)))
    clients = max(1, min(options.pair_clients, needed))
    per_worker = split(needed, clients)
    worker_sites = []
    for w, count in enumerate(per_worker):
        chunks = split(count, math.ceil(count / options.agents_per_site))
        worker_sites.append([SiteSeed(f"bench-chat-{w}-{j}", agents=n, capacity=1) for j, n in enumerate(chunks)])
    sites = [site for group in worker_sites for site in group]
    return PairPlan(needed, clients, per_worker, sites, worker_sites)


def run_pairs(
    spec: ConfigSpec,
    options: Options,
    deployment: Deployment,
    seeded: dict[str, list[SeededAgent]],
    plan: PairPlan,
    latency: bool,
    throughput: bool,
) -> dict[str, Any]:
    """Latency runs, then throughput steps, with visitor–agent pairs set up once."""
    needed, clients, per_worker = plan.needed, plan.clients, plan.per_worker
    servers = deployment.servers
    workers: Workers | None = None
    try:
        visitor_server, agent_server = servers[0], servers[-1]
        deployment.check_login(agent_server, seeded[plan.sites[0].key][0])
        _log(f"pairs/{spec.name}: setting up {needed} visitor–agent pairs from {clients} client processes")
        workers = Workers("pairs", clients)
        setup = workers.call(
            "setup",
            [
                {
                    "mode": "nameplate",
                    "visitor_base": visitor_server.base_url,
                    "agent_base": agent_server.base_url,
                    "sites": [
                        {"site": site.key, "cookies": [deployment.session_cookie(a) for a in seeded[site.key]]}
                        for site in group
                    ],
                    "count": sum(site.agents for site in group),
                    "concurrency": 20,
                    "timeout": 600.0,
                    "database_url": deployment.database_url,
                    "settle": options.settle,
                }
                for group in plan.worker_sites
            ],
            timeout=630,
        )
        result: dict[str, Any] = {
            "config": spec.name,
            "pairs_set_up": sum(s["pairs"] for s in setup),
            "setup_seconds": max(s["seconds"] for s in setup),
            "client_processes": clients,
            "sites": len(plan.sites),
            "agents_per_site": options.agents_per_site,
        }
        counter = 0

        def run_id() -> str:
            nonlocal counter
            counter += 1
            return f"b{counter}"

        if latency:
            pairs = max(options.pairs, pairs_for_rate(options.rate))
            runs = []
            for attempt in range(options.repeat):
                _log(
                    f"latency/{spec.name}: {pairs} pairs, {options.rate:.0f} msg/s for {options.duration:.0f}s"
                    f" (run {attempt + 1}/{options.repeat})"
                )
                runs.append(
                    run_load(
                        workers,
                        servers,
                        deployment,
                        run_id(),
                        split(pairs, clients),
                        options.rate,
                        options.duration,
                        options,
                        profile_as=spec.name if attempt == 0 else None,
                    )
                )
            result["latency"] = combine_runs(runs)
        if throughput:
            steps: list[dict[str, Any]] = []
            for rate in options.steps:
                _log(f"throughput/{spec.name}: {rate:.0f} msg/s for {options.step_duration:.0f}s over {needed} pairs")
                step = run_load(
                    workers, servers, deployment, run_id(), per_worker, rate, options.step_duration, options
                )
                step["passed"] = step_passed(step)
                steps.append(step)
                # Stop once the server is overloaded (it fell behind and sending stopped), or after two failed
                # steps in a row (one can be a hiccup of a shared machine).
                two_failed = len(steps) >= 2 and not steps[-1]["passed"] and not steps[-2]["passed"]
                if not options.all_steps and (step["aborted_at_s"] is not None or two_failed):
                    break
            passed = [s["target_rate"] for s in steps if s["passed"]]
            sustained = [
                s["target_rate"]
                for s in steps
                if s["aborted_at_s"] is None and s["lost"] == 0 and s["achieved_rate"] >= 0.95 * s["target_rate"]
            ]
            result["throughput"] = {
                "steps": steps,
                "max_rate_p99_under_limit": max(passed) if passed else None,
                "max_rate_sustained": max(sustained) if sustained else None,
                "stored_per_process": (max(passed) / len(servers)) if passed else None,
                "pairs": needed,
                "p99_limit_ms": THROUGHPUT_P99_LIMIT_MS,
            }
        result["sequence_problems"] = deployment.sequence_problems()[:10]
        return result
    finally:
        if workers is not None:
            workers.close()


@contextlib.contextmanager
def deployed(
    spec: ConfigSpec, label: str, sites: list[SiteSeed], options: Options
) -> Iterator[tuple[Deployment, dict[str, list[SeededAgent]]]]:
    """A fresh store (and Redis prefix), seeded, with the configuration's server processes running."""
    deployment = Deployment(spec, label)
    try:
        deployment.prepare()
        seeded = deployment.seed(sites)
        _log(f"{label}/{spec.name}: store ready and seeded; starting {spec.processes} server process(es)")
        deployment.start_servers()
        yield deployment, seeded
    finally:
        deployment.teardown(keep_logs_in=options.logs)


def run_config(spec: ConfigSpec, options: Options, scenarios: set[str]) -> dict[str, Any]:
    """Every scenario asked for, on fresh deployments: idle on its own (a clean process to measure memory
    on), latency and throughput together. With `share` (--quick) one deployment serves them all."""
    config: dict[str, Any] = {"description": spec.description, "processes": spec.processes}
    latency, throughput = "latency" in scenarios, "throughput" in scenarios
    plan = pair_plan(options, latency, throughput) if latency or throughput else None
    groups = [g for g in (["idle"] if "idle" in scenarios else [], ["pairs"] if plan else []) if g]
    if options.share and len(groups) > 1:
        groups = [["idle", "pairs"]]
    for group in groups:
        sites = (idle_sites(spec, options) if "idle" in group else []) + (
            plan.sites if plan and "pairs" in group else []
        )
        try:
            with deployed(spec, "+".join(group), sites, options) as (deployment, seeded):
                if "idle" in group:
                    try:
                        config["idle"] = run_idle(spec, options, deployment)
                    except Exception:  # noqa: BLE001 - reported; the other scenarios still run
                        config["idle_error"] = traceback.format_exc()
                        print(config["idle_error"], file=sys.stderr)
                if "pairs" in group:
                    assert plan is not None
                    try:
                        config["pairs"] = run_pairs(spec, options, deployment, seeded, plan, latency, throughput)
                    except Exception:  # noqa: BLE001
                        config["pairs_error"] = traceback.format_exc()
                        print(config["pairs_error"], file=sys.stderr)
        except Exception:  # noqa: BLE001 - the deployment itself failed
            for name in group:
                config[f"{name}_error"] = traceback.format_exc()
            print(config[f"{group[0]}_error"], file=sys.stderr)
    return config


def step_passed(step: dict[str, Any]) -> bool:
    p99 = step["delivered"]["p99"]
    return (
        p99 is not None
        and p99 < THROUGHPUT_P99_LIMIT_MS
        and step["lost"] == 0
        and step["duplicated"] == 0
        and step["achieved_rate"] >= 0.95 * step["target_rate"]
        and step["aborted_at_s"] is None
    )


def run_load(
    workers: Workers,
    servers: list[Proc],
    deployment: Deployment | None,
    run_id: str,
    pairs_per_worker: list[int],
    rate: float,
    duration: float,
    options: Options,
    profile_as: str | None = None,
) -> dict[str, Any]:
    """One bounded load: `rate` msg/s in total for `duration` s, spread over the workers by their pairs."""
    total_pairs = sum(pairs_per_worker)
    quiet = wait_for_quiet(options.wait_quiet) if options.wait_quiet > 0 else None
    start_at = time.time() + 1.0
    workers.send(
        "run",
        [
            {
                "run_id": run_id,
                "pairs": pairs,
                "rate": rate * pairs / total_pairs,
                "duration": duration,
                "start_at": start_at,
                "drain": options.drain,
                "check_every": options.check_every if deployment else 0,
                "body_chars": options.body_chars,
            }
            for pairs in pairs_per_worker
        ],
    )
    time.sleep(max(0.0, start_at - time.time()))
    sessions_before = deployment.database_sessions() if deployment else None
    recorders = None
    if profile_as and options.profile is not None:
        recorders = profile.start(
            [(f"{profile_as}-{s.name.rsplit('-', 1)[-1]}", s.pid) for s in servers], duration, options.profile
        )
    meter = CpuMeter([s.pid for s in servers] + workers.pids)
    time.sleep(duration)
    cpu = meter.percent()
    machine = meter.machine_percent()
    sessions_after = deployment.database_sessions() if deployment else None
    rss = {s.name: rss_kib(s.pid) / 1024 for s in servers}
    results = workers.collect("run", timeout=duration + options.drain + 120)
    profiles = profile.finish(recorders, duration) if recorders else None
    ack_ms = [v for r in results for v in r["ack_ms"]]
    delivered_ms = [v for r in results for v in r["delivered_ms"]]
    sent = sum(r["sent"] for r in results)
    aborted = [r["aborted_at_s"] for r in results if r["aborted_at_s"] is not None]
    delivered = sum(r["delivered"] for r in results)
    finish = max(r["finish_seconds"] for r in results)
    errors: Counter[str] = Counter()
    frames: Counter[str] = Counter()
    for r in results:
        errors.update(r["errors"])
        frames.update(r["frames"])
    store = verify_store(deployment, run_id, [a for r in results for a in r["acks"]]) if deployment else None
    missing = sum(r["missing_acks"] + r["missing_deliveries"] for r in results)
    duplicates = sum(r["duplicate_acks"] + r["duplicate_deliveries"] for r in results)
    lost = missing + (store["not_stored"] + store["wrong_seq"] if store else 0)
    duplicated = duplicates + (store["stored_twice"] if store else 0)
    return {
        "run_id": run_id,
        "target_rate": rate,
        "pairs": total_pairs,
        "duration": duration,
        "sent": sent,
        "scheduled": sum(r["scheduled"] for r in results),
        "aborted_at_s": min(aborted) if aborted else None,
        "achieved_rate": delivered / max(duration, finish),
        "ack": summary(ack_ms),
        "delivered": summary(delivered_ms),
        "missing_acks": sum(r["missing_acks"] for r in results),
        "missing_deliveries": sum(r["missing_deliveries"] for r in results),
        "duplicate_acks": sum(r["duplicate_acks"] for r in results),
        "duplicate_deliveries": sum(r["duplicate_deliveries"] for r in results),
        "misrouted": sum(r["misrouted"] for r in results),
        "lost": lost,
        "duplicated": duplicated,
        "store": store,
        "stored_before_ack_checked": sum(r["store_checked"] for r in results),
        "stored_before_ack_missing": sum(r["store_missing"] for r in results),
        "stored_before_ack_errors": sum(r["store_check_errors"] for r in results),
        "errors": dict(errors),
        "frames_received": dict(frames),
        "dropped": sum(r["dropped"] for r in results),
        "send_failures": sum(r["send_failures"] for r in results),
        "max_schedule_lag_ms": max(r["max_lag_ms"] for r in results),
        "server_cpu_pct": {s.name: cpu[s.pid] for s in servers},
        "client_cpu_pct": sum(cpu[pid] for pid in workers.pids),
        "machine_busy_pct": machine,
        "quiet_wait": quiet,
        # PostgreSQL: connections the server processes opened during the load (a steady pool opens none).
        "new_db_connections": (sessions_after - sessions_before)
        if sessions_before is not None and sessions_after is not None
        else None,
        "server_rss_mib": rss,
        **({"profile": profiles} if profiles else {}),
    }


def verify_store(deployment: Deployment, run_id: str, acks: list[tuple[str, str, int]]) -> dict[str, Any]:
    """Every acked message is in the messages table exactly once, under the conversation and seq acked."""
    stored = deployment.stored_messages(f"{run_id}.")
    not_stored = stored_twice = wrong_seq = 0
    for client_id, conversation_id, seq in acks:
        rows = stored.get(client_id)
        if not rows:
            not_stored += 1
        elif len(rows) > 1:
            stored_twice += 1
        elif rows[0] != (conversation_id, seq):
            wrong_seq += 1
    acked = {a[0] for a in acks}
    return {
        "acked": len(acks),
        "rows": sum(len(rows) for rows in stored.values()),
        "not_stored": not_stored,
        "stored_twice": stored_twice + sum(1 for cid, rows in stored.items() if cid not in acked and len(rows) > 1),
        "wrong_seq": wrong_seq,
        "stored_not_acked": sum(1 for cid in stored if cid not in acked),
    }


def combine_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One run as is; several: medians of the percentiles, sums of the counts, every run kept."""
    if len(runs) == 1:
        return {**runs[0], "runs": 1}
    combined = dict(runs[-1])
    for part in ("ack", "delivered"):
        combined[part] = {key: median_of([r[part] for r in runs], key) for key in ("count", "p50", "p90", "p99", "max")}
    for key in ("achieved_rate", "client_cpu_pct", "machine_busy_pct", "max_schedule_lag_ms", "new_db_connections"):
        combined[key] = median_of(runs, key)
    for key in (
        "sent",
        "lost",
        "duplicated",
        "missing_acks",
        "missing_deliveries",
        "duplicate_acks",
        "duplicate_deliveries",
        "dropped",
        "stored_before_ack_checked",
        "stored_before_ack_missing",
    ):
        combined[key] = sum(r[key] for r in runs)
    combined["server_cpu_pct"] = {
        name: median_of([r["server_cpu_pct"] for r in runs], name) for name in runs[0]["server_cpu_pct"]
    }
    combined["runs"] = len(runs)
    if runs[0].get("profile"):
        combined["profile"] = runs[0]["profile"]
    combined["each_run"] = [{"delivered": r["delivered"], "ack": r["ack"], "lost": r["lost"]} for r in runs]
    return combined


# -- the baseline -----------------------------------------------------------------------------------------
def run_relay(options: Options) -> dict[str, Any]:
    import os

    pairs = max(options.pairs, pairs_for_rate(options.rate))
    clients = max(1, min(options.pair_clients, pairs))
    per_worker = split(pairs, clients)
    assert options.logs is not None
    relay = start_relay(options.logs, dict(os.environ))
    workers: Workers | None = None
    try:
        _log(f"relay: {pairs} pairs, {options.rate:.0f} msg/s for {options.duration:.0f}s")
        workers = Workers("pairs", clients)
        workers.call(
            "setup",
            [
                {
                    "mode": "relay",
                    "visitor_base": relay.base_url,
                    "agent_base": relay.base_url,
                    "sites": [],
                    "count": count,
                    "concurrency": 50,
                    "timeout": 120.0,
                    "database_url": None,
                    "settle": options.settle,
                }
                for count in per_worker
            ],
            timeout=150,
        )
        runs = [
            run_load(workers, [relay], None, f"relay{i}", per_worker, options.rate, options.duration, options)
            for i in range(options.repeat)
        ]
        return {"config": "relay", **combine_runs(runs)}
    finally:
        if workers is not None:
            workers.close()
        relay.stop()

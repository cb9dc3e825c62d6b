"""`python -m bench`: run the scenarios against the configurations, print the tables, write the report."""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.deploy import CONFIGS, unavailable_reason
from bench.machine import facts
from bench.procs import load_average
from bench.report import RAW_BEGIN, read_raw, render
from bench.scenarios import Options, run_config, run_relay

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "latest.md"
SCENARIOS = ("idle", "latency", "throughput")

# --quick: a few dozen sockets for a few seconds; checks that everything works, measures nothing.
QUICK = Options(
    connections=40,
    hold=2.0,
    per_site=10,
    per_client=4500,
    pairs=10,
    rate=100.0,
    duration=2.0,
    steps=[100.0, 200.0],
    step_duration=2.0,
    pair_clients=1,
    repeat=1,
    drain=5.0,
    check_every=10,
    setup_concurrency=20,
    settle=0.3,
    share=True,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--scenario",
        type=_scenarios,
        default="all",
        help="idle, latency, throughput, a comma-separated list of them, or all (default)",
    )
    parser.add_argument("--config", choices=[*CONFIGS, "all"], default="all")
    parser.add_argument("--connections", type=int, help="idle visitor sockets (default 5000; 18000 for the full run)")
    parser.add_argument("--hold", type=float, help="seconds to hold the idle sockets (default 30)")
    parser.add_argument("--per-site", type=int, help="idle visitors per site (default 100; see README)")
    parser.add_argument(
        "--per-process",
        action="store_true",
        help="--connections is per server process (pg-redis-2 then opens twice as many)",
    )
    parser.add_argument("--per-client", type=int, help="sockets per client process (default 4500, max ~18000)")
    parser.add_argument("--pairs", type=int, help="visitor–agent pairs for the latency load (default 100)")
    parser.add_argument("--rate", type=float, help="total msg/s of the latency load (default 1000)")
    parser.add_argument("--duration", type=float, help="seconds of the latency load (default 30)")
    parser.add_argument(
        "--steps", help="throughput rates, comma-separated (default 100,250,500,1000,2000,3000,4000,5000)"
    )
    parser.add_argument("--step-duration", type=float, help="seconds per throughput step (default 10)")
    parser.add_argument("--all-steps", action="store_true", help="keep stepping after a failed step")
    parser.add_argument("--clients", type=int, help="client processes for the pair loads (default 2)")
    parser.add_argument("--agents-per-site", type=int, help="agents (= pairs) per site for the pair loads (default 10)")
    parser.add_argument("--repeat", type=int, help="latency runs per configuration; medians reported (default 1)")
    parser.add_argument("--quick", action="store_true", help="a few dozen sockets for a few seconds (smoke test)")
    parser.add_argument("--no-relay", action="store_true", help="skip the bare-relay baseline")
    parser.add_argument(
        "--profile",
        type=Path,
        help="record py-spy profiles of the servers during the latency load into this folder (needs py-spy)",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        help="before each measured load, wait up to this many seconds for the machine to be "
        "< 25%% busy (it is shared); 0 = do not wait",
    )
    parser.add_argument(
        "--keep-from",
        type=Path,
        help="carry over from this earlier report the results of scenarios and configurations not "
        "run now (e.g. keep a long idle run while re-running latency,throughput); the report "
        "says so",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"report file (default {DEFAULT_OUTPUT})")
    return parser


def _scenarios(text: str) -> set[str]:
    chosen = set(SCENARIOS) if text == "all" else {part.strip() for part in text.split(",") if part.strip()}
    unknown = chosen - set(SCENARIOS)
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown scenario(s) {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    return chosen


def _carry_over(data: dict[str, Any], previous: dict[str, Any], scenarios: set[str], names: list[str]) -> None:
    """Copy in the earlier report's results for what this run did not measure, and say where they came from."""
    parts = []
    keep_idle = "idle" not in scenarios
    keep_pairs = not scenarios & {"latency", "throughput"}
    for name, old in previous.get("configs", {}).items():
        config = data["configs"].setdefault(name, {k: old[k] for k in ("description", "processes") if k in old})
        if name not in names and "skipped" in old:
            config.setdefault("skipped", old["skipped"])
        # A configuration not run now keeps all its earlier results.
        idle, pairs = keep_idle or name not in names, keep_pairs or name not in names
        for keep, keys in ((idle, ("idle", "idle_error")), (pairs, ("pairs", "pairs_error"))):
            for key in keys:
                if keep and key in old and key not in config:
                    config[key] = old[key]
                    parts.append(f"{name} {key.replace('_', ' ')}")
    if "latency" not in scenarios and previous.get("relay") and not data.get("relay"):
        data["relay"] = previous["relay"]
        parts.append("relay")
    if parts:
        data["carried_over"] = {
            "parts": parts,
            "started": previous.get("started"),
            "command": previous.get("command"),
            "load_average_start": previous.get("load_average_start"),
            "load_average_end": previous.get("load_average_end"),
            "machine_git_commit": previous.get("machine", {}).get("git_commit"),
        }


def options_from(args: argparse.Namespace) -> Options:
    options = QUICK if args.quick else Options()
    given = {
        "connections": args.connections,
        "hold": args.hold,
        "per_site": args.per_site,
        "per_client": args.per_client,
        "pairs": args.pairs,
        "rate": args.rate,
        "duration": args.duration,
        "step_duration": args.step_duration,
        "pair_clients": args.clients,
        "repeat": args.repeat,
        "agents_per_site": args.agents_per_site,
        "steps": [float(s) for s in args.steps.split(",")] if args.steps else None,
    }
    options = replace(
        options,
        **{k: v for k, v in given.items() if v is not None},
        all_steps=args.all_steps,
        per_process=args.per_process,
        profile=args.profile,
        wait_quiet=args.wait_quiet,
    )
    if options.per_client > 18_000:
        raise SystemExit("--per-client: a client process may hold at most ~18,000 sockets (open-file limit 20,000)")
    if options.connections <= 0 or options.pairs <= 0 or options.rate <= 0:
        raise SystemExit("--connections, --pairs and --rate must be positive")
    return options


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    options = options_from(args)
    scenarios = args.scenario
    previous = read_raw(args.keep_from.read_text()) if args.keep_from else None
    names = list(CONFIGS) if args.config == "all" else [args.config]
    options = replace(options, logs=Path(tempfile.mkdtemp(prefix="nameplate-bench-logs-")))
    started = time.time()
    data: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M", time.gmtime(started)),
        "command": "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(options).items()},
        "machine": facts(
            postgres=any(CONFIGS[n].postgres for n in names), redis_used=any(CONFIGS[n].redis for n in names)
        ),
        "configs": {},
        "relay": None,
        "load_average_start": load_average(),
    }
    failed = False
    if "latency" in scenarios and not args.no_relay:
        try:
            data["relay"] = run_relay(options)
        except Exception:  # noqa: BLE001 - reported, the other measurements still run
            data["relay_error"] = traceback.format_exc()
            failed = True
            print(data["relay_error"], file=sys.stderr)
    for name in names:
        spec = CONFIGS[name]
        reason = unavailable_reason(spec)
        if reason:
            data["configs"][name] = {"description": spec.description, "processes": spec.processes, "skipped": reason}
            print(f"[bench] {name}: skipped: {reason}", file=sys.stderr)
            continue
        config = run_config(spec, options, scenarios)
        data["configs"][name] = config
        failed = failed or any(key in config for key in ("idle_error", "pairs_error"))
    if previous is not None:
        _carry_over(data, previous, scenarios, names)
        data["configs"] = {name: data["configs"][name] for name in CONFIGS if name in data["configs"]}
    data["wall_seconds"] = time.time() - started
    data["load_average_end"] = load_average()
    text = render(data)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print()
    print(text.split(RAW_BEGIN, 1)[0].rstrip())
    print(f"\nreport written to {args.output}; server logs in {options.logs}")
    if failed:
        sys.exit(1)

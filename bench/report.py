"""The report: markdown tables for people, the same data as JSON at the end for tools (and the smoke test)."""

from __future__ import annotations

import json
from typing import Any

# The targets the figures are read against (2-core machine).
TARGET_IDLE_SOCKETS = 18_000
TARGET_KIB_PER_SOCKET = 24.0
STRETCH_KIB_PER_SOCKET = 16.0
TARGET_P50_MS = 5.0
TARGET_P99_MS = 30.0
TARGET_STORED_PER_PROCESS = 2_000.0
STRETCH_STORED_PER_PROCESS = 5_000.0
TARGET_RELAY_RATIO_P50 = 3.0

RAW_BEGIN = "<!-- bench-raw-json -->"
BACKLOG_SECONDS = 3.0  # bench/clients.py PairWorker.run: sending stops this far behind


def num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def ms(part: dict[str, Any] | None) -> str:
    if not part or part.get("p50") is None:
        return "—"
    return " / ".join(num(part[k], 1) for k in ("p50", "p90", "p99", "max"))


def ratio(ours: float | None, base: float | None) -> float | None:
    if ours is None or not base:
        return None
    return ours / base


def _loads(values: list[float] | None) -> str:
    return " / ".join(f"{v:.2f}" for v in values) if values else "?"


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("met" if ok else "**missed**")


def render(data: dict[str, Any]) -> str:
    machine = data["machine"]
    lines = [
        "# Nameplate benchmark results",
        "",
        f"Run {data['started']} UTC, `{data['command']}` ({data['wall_seconds']:.0f} s wall time).",
        "",
        "## Machine",
        "",
        f"- CPU: {machine['cpu_model']}, {machine['cores']} cores ({machine['cores_usable']} usable), "
        f"{num(machine['memory_gib'])} GiB RAM, Linux {machine['kernel']}, open-file limit "
        f"{machine['open_files_limit']}",
        f"- Python {machine['python']} ({machine['implementation']}); "
        + ", ".join(f"{k} {v}" for k, v in machine["packages"].items()),
        "- Services: " + (", ".join(f"{k} {v}" for k, v in machine["services"].items()) or "none used"),
        f"- Code: commit {machine['git_commit'] or '?'}"
        + (
            f", with uncommitted changes in {len(machine['server_files_uncommitted'])} server file(s)"
            if machine["server_files_uncommitted"]
            else ", server/ clean"
        ),
        "- Clients and servers (and PostgreSQL and Redis) share this machine; client CPU is shown where measured, "
        "and *machine busy %* (all cores, every process, from /proc/stat) shows anything else competing. "
        f"Load average (1/5/15 min) at start {_loads(data.get('load_average_start'))}, "
        f"at end {_loads(data.get('load_average_end'))}.",
        "",
    ]
    carried = data.get("carried_over")
    if carried:
        lines += [
            f"**Carried over** from the run of {carried['started']} UTC (`{carried['command']}`, commit "
            f"{carried.get('machine_git_commit') or '?'}, load average {_loads(carried.get('load_average_start'))} → "
            f"{_loads(carried.get('load_average_end'))}): {', '.join(carried['parts'])}. Everything else is from "
            "this run.",
            "",
        ]
    configs: dict[str, Any] = data["configs"]
    relay = data.get("relay")
    lines += _targets(configs, relay)
    lines += _idle(configs)
    lines += _latency(configs, relay)
    lines += _throughput(configs)
    lines += _profiles(configs)
    problems = []
    for name, config in configs.items():
        for key in ("skipped", "idle_error", "pairs_error"):
            if config.get(key):
                problems.append(f"- **{name}** {key.replace('_', ' ')}: {str(config[key]).strip().splitlines()[-1]}")
    if data.get("relay_error"):
        problems.append(f"- **relay** error: {data['relay_error'].strip().splitlines()[-1]}")
    if problems:
        lines += ["## Skipped or failed", "", *problems, ""]
    lines += [
        "## Raw data",
        "",
        "Every figure above, and a few more, as JSON (latency samples are summarised, not listed).",
        "",
        RAW_BEGIN,
        "```json",
        json.dumps(data, indent=1, sort_keys=True, default=str),
        "```",
        "",
    ]
    return "\n".join(lines)


def _targets(configs: dict[str, Any], relay: dict[str, Any] | None) -> list[str]:
    names = list(configs)
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, cell: Any) -> None:
        rows.append((label, [cell(configs[name]) for name in names]))

    def idle(config: dict[str, Any]) -> dict[str, Any] | None:
        return config.get("idle")

    def latency(config: dict[str, Any]) -> dict[str, Any] | None:
        return (config.get("pairs") or {}).get("latency")

    def throughput(config: dict[str, Any]) -> dict[str, Any] | None:
        return (config.get("pairs") or {}).get("throughput")

    def sockets_cell(config: dict[str, Any]) -> str:
        result = idle(config)
        if not result:
            return "—"
        busiest = max(p["connections"] for p in result["processes"])
        ok = busiest >= TARGET_IDLE_SOCKETS and result["dropped_during_hold"] == 0
        return f"{num(busiest)} in the busiest process: {verdict(ok)}"

    def kib_cell(config: dict[str, Any]) -> str:
        result = idle(config)
        if not result:
            return "—"
        value = result["kib_per_connection"]
        return (
            f"{num(value)} KiB: {verdict(value <= TARGET_KIB_PER_SOCKET)}"
            f" (stretch {STRETCH_KIB_PER_SOCKET:.0f}: {verdict(value <= STRETCH_KIB_PER_SOCKET)})"
        )

    def p50_cell(config: dict[str, Any]) -> str:
        result = latency(config)
        if not result or result["delivered"]["p50"] is None:
            return "—"
        value = result["delivered"]["p50"]
        return f"{num(value)} ms: {verdict(value <= TARGET_P50_MS)}"

    def p99_cell(config: dict[str, Any]) -> str:
        result = latency(config)
        if not result or result["delivered"]["p99"] is None:
            return "—"
        value = result["delivered"]["p99"]
        return f"{num(value)} ms: {verdict(value <= TARGET_P99_MS)}"

    def lost_cell(config: dict[str, Any]) -> str:
        parts = [p for p in [latency(config), *((throughput(config) or {}).get("steps") or [])] if p]
        if not parts:
            return "—"
        lost = sum(p["lost"] for p in parts)
        duplicated = sum(p["duplicated"] for p in parts)
        return f"{lost} lost, {duplicated} dup: {verdict(lost == 0 and duplicated == 0)}"

    def throughput_cell(config: dict[str, Any]) -> str:
        result = throughput(config)
        if not result:
            return "—"
        value = result["stored_per_process"]
        stretch = value is not None and value >= STRETCH_STORED_PER_PROCESS
        return (
            f"{num(value, 0)} msg/s: {verdict(value is not None and value >= TARGET_STORED_PER_PROCESS)}"
            f" (stretch {STRETCH_STORED_PER_PROCESS:,.0f}: {verdict(stretch)})"
        )

    def ratio_cell(config: dict[str, Any]) -> str:
        result = latency(config)
        if not result or not relay:
            return "—"
        value = ratio(result["delivered"]["p50"], relay["delivered"]["p50"])
        return f"{num(value)}×: {verdict(value is not None and value <= TARGET_RELAY_RATIO_P50)}"

    row(f"{TARGET_IDLE_SOCKETS:,} idle visitor sockets in one process", sockets_cell)
    row(f"≤ {TARGET_KIB_PER_SOCKET:.0f} KiB RSS per idle socket", kib_cell)
    row(f"p50 send→delivered ≤ {TARGET_P50_MS:.0f} ms (latency load)", p50_cell)
    row(f"p99 send→delivered ≤ {TARGET_P99_MS:.0f} ms (latency load)", p99_cell)
    row("zero lost / duplicated (latency + throughput, checked against the store)", lost_cell)
    row(f"≥ {TARGET_STORED_PER_PROCESS:,.0f} stored msg/s per process (p99 < 50 ms)", throughput_cell)
    row(f"p50 send→delivered ≤ {TARGET_RELAY_RATIO_P50:.0f}× the bare relay", ratio_cell)
    out = ["## Against the targets", "", "| target | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    out += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
    return [*out, ""]


def _idle(configs: dict[str, Any]) -> list[str]:
    rows = []
    for name, config in configs.items():
        result = config.get("idle")
        if not result:
            continue
        queue_ramp = result["frames_per_visitor_ramp"].get("queue", 0.0)
        queue_hold = result["frames_per_visitor_hold"].get("queue", 0.0)
        for proc in result["processes"]:
            rows.append(
                f"| {name} | {proc['name'].rsplit('-', 1)[-1]} | {num(proc['connections'])} | "
                f"{num(result['failed'])} | {num(result['ramp_seconds'])} | {num(result['ramp_per_second'], 0)} | "
                f"{num(proc['rss_before_mib'])} → {num(proc['rss_after_hold_mib'])} | "
                f"**{num(proc['kib_per_connection'])}** | **{num(proc['cpu_idle_pct'], 2)}** | "
                f"{num(proc['cpu_ramp_pct'], 0)} | {num(result.get('machine_busy_hold_pct'), 0)} | "
                f"{num(result['dropped_during_hold'])} | "
                f"{num(queue_ramp, 2)} / {num(queue_hold, 2)} |"
            )
    if not rows:
        return []
    first = next(c["idle"] for c in configs.values() if c.get("idle"))
    return [
        "## 1. Idle capacity",
        "",
        f"Visitor sockets that said hello and started a conversation (one message, acked), then held "
        f"{first['hold_seconds']:.0f} s with pings on (server and client every 20 s); {first['visitors_per_site']} "
        f"visitors per site, no agents online, so every conversation stays queued. KiB/socket = (RSS after "
        f"hold − RSS before the ramp) / sockets on that process. CPU % is of one core.",
        "",
        "| config | process | sockets | failed | ramp s | opened/s | RSS MiB before → after | KiB/socket | "
        "idle CPU % | ramp CPU % | machine busy % (hold) | dropped in hold | queue frames per visitor ramp / hold |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def _latency(configs: dict[str, Any], relay: dict[str, Any] | None) -> list[str]:
    rows = []
    base = relay["delivered"] if relay else None
    base_ack = relay["ack"] if relay else None

    def line(name: str, result: dict[str, Any]) -> str:
        delivered, ack = result["delivered"], result["ack"]
        cpu = ", ".join(f"{num(v, 0)}" for v in result["server_cpu_pct"].values())
        overloaded = f" (fell behind, stopped at {result['aborted_at_s']:.1f} s)" if result.get("aborted_at_s") else ""
        return (
            f"| {name}{overloaded} | {num(result['pairs'])} | "
            f"{num(result['target_rate'], 0)} / {num(result['achieved_rate'], 0)} | "
            f"{ms(ack)} | {ms(delivered)} | {num(result['lost'])} | {num(result['duplicated'])} | "
            f"{num(ratio(delivered['p50'], base['p50']) if base else None)}× / "
            f"{num(ratio(delivered['p99'], base['p99']) if base else None)}× | "
            f"{num(ratio(ack['p50'], base_ack['p50']) if base_ack else None)}× | {cpu} | "
            f"{num(result['client_cpu_pct'], 0)} | {num(result.get('machine_busy_pct'), 0)} | "
            f"{num(result['max_schedule_lag_ms'])} |"
        )

    if relay:
        rows.append(line("bare relay", relay))
    for name, config in configs.items():
        result = (config.get("pairs") or {}).get("latency")
        if result:
            rows.append(line(name, result))
    if not rows:
        return []
    sample = relay or next(c["pairs"]["latency"] for c in configs.values() if (c.get("pairs") or {}).get("latency"))
    store_notes = []
    for name, config in configs.items():
        result = (config.get("pairs") or {}).get("latency")
        if result and result.get("store"):
            store = result["store"]
            store_notes.append(
                f"{name}: {num(store['acked'])} acked, {num(store['rows'])} rows, {store['not_stored']} missing, "
                f"{store['stored_twice']} twice, {store['wrong_seq']} wrong seq; stored-before-ack probes "
                f"{result['stored_before_ack_checked']} checked, {result['stored_before_ack_missing']} missing"
            )
    churn = [
        f"{name}: {num(config['pairs']['latency']['new_db_connections'], 0)}"
        for name, config in configs.items()
        if ((config.get("pairs") or {}).get("latency") or {}).get("new_db_connections") is not None
    ]
    return [
        "## 2. Delivery latency",
        "",
        f"{num(sample['pairs'])} visitor–agent pairs, {num(sample['target_rate'], 0)} msg/s in total for "
        f"{num(sample['duration'], 0)} s, half from visitors and half from agents, on a fixed schedule. "
        "Milliseconds, p50 / p90 / p99 / max, from just before `send` to the sender's `ack` (stored) and to "
        "the other side's `message` frame. ×relay: our delivered p50 / p99 and ack p50 over the bare relay's."
        + (f" Medians of {sample['runs']} runs." if sample.get("runs", 1) > 1 else ""),
        "",
        "| config | pairs | msg/s target / achieved | ack ms | delivered ms | lost | dup | ×relay delivered "
        "p50 / p99 | ×relay ack p50 | server CPU % | client CPU % | machine busy % | max send lag ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        *(["Store check: " + "; ".join(store_notes) + ".", ""] if store_notes else []),
        *(
            [
                "New PostgreSQL connections opened by the server(s) during the load (a steady pool opens none): "
                + "; ".join(churn)
                + ".",
                "",
            ]
            if churn
            else []
        ),
    ]


def _passed(step: dict[str, Any]) -> str:
    if step["passed"]:
        return "yes"
    if step.get("aborted_at_s") is not None:
        return f"no: over {BACKLOG_SECONDS:.0f} s of messages outstanding at {step['aborted_at_s']:.1f} s, stopped"
    return "no"


def _throughput(configs: dict[str, Any]) -> list[str]:
    rows = []
    best = []
    for name, config in configs.items():
        result = (config.get("pairs") or {}).get("throughput")
        if not result:
            continue
        for step in result["steps"]:
            cpu = ", ".join(f"{num(v, 0)}" for v in step["server_cpu_pct"].values())
            rows.append(
                f"| {name} | {num(step['target_rate'], 0)} | {num(step['achieved_rate'], 0)} | "
                f"{num(step['delivered']['p50'])} / {num(step['delivered']['p99'])} / "
                f"{num(step['delivered']['max'])} | "
                f"{num(step['ack']['p99'])} | {num(step['lost'])} | {num(step['duplicated'])} | {cpu} | "
                f"{num(step['client_cpu_pct'], 0)} | {num(step.get('machine_busy_pct'), 0)} | "
                f"{num(step.get('new_db_connections'))} | "
                f"{_passed(step)} |"
            )
        best.append(
            f"**{name}**: {num(result['max_rate_p99_under_limit'], 0)} msg/s in total, "
            f"{num(result['stored_per_process'], 0)} stored msg/s per process (highest rate sustained "
            f"whatever the latency: {num(result.get('max_rate_sustained'), 0)} msg/s)"
        )
    if not rows:
        return []
    first = next(c["pairs"]["throughput"] for c in configs.values() if (c.get("pairs") or {}).get("throughput"))
    return [
        "## 3. Stored throughput",
        "",
        f"The rate steps up over {first['pairs']} pairs (each sender ≤ 5 msg/s, under the agents' fixed 10/s "
        f"limit); a step passes when p99 send→delivered < {first['p99_limit_ms']:.0f} ms, nothing is lost or "
        "duplicated (checked against the store) and ≥ 95 % of the target rate is delivered. Stepping stops at "
        "an overloaded step (more than 3 s of messages outstanding: sending stops) or two failed steps in a row.",
        "",
        "| config | target msg/s | delivered msg/s | delivered ms p50 / p99 / max | ack p99 ms | lost | dup | "
        "server CPU % | client CPU % | machine busy % | new PostgreSQL connections | pass |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Highest passing rate: " + "; ".join(best) + ".",
        "",
    ]


def _profiles(configs: dict[str, Any], top: int = 12) -> list[str]:
    out = []
    for config in configs.values():
        profiles = {
            **(((config.get("pairs") or {}).get("latency") or {}).get("profile") or {}),
            **((config.get("idle") or {}).get("ramp_profile") or {}),
        }
        for process, found in profiles.items():
            during = (
                "the idle ramp (first 20 s)"
                if "-ramp-" in process
                else "the idle hold"
                if "-hold-" in process
                else "the latency load"
            )
            if not found.get("samples"):
                out += [f"**{process}**: no samples ({found.get('error', '?')[:200]})", ""]
                continue
            others = ", ".join(f"{k} {v} %" for k, v in found["other_threads_busy_pct"].items()) or "none"
            out += [
                f"**{process}**: event loop (MainThread) busy {found['event_loop_busy_pct']} % of the wall time of "
                f"{during} ({found['samples']:,} samples at 100/s); other threads busy: {others}. "
                f"Percentages below are of the event loop's samples. Raw stacks: `{found['file']}`.",
                "",
                "Event loop samples by kind of work: "
                + "; ".join(f"{label} {pct} %" for label, pct in found.get("categories", []))
                + ".",
                "",
                "| inclusive % | function (file) | | self % | function (file) |",
                "|---|---|---|---|---|",
            ]
            inclusive, own = found["inclusive"][:top], found["self"][:top]
            for index in range(max(len(inclusive), len(own))):
                left = inclusive[index] if index < len(inclusive) else ["", ""]
                right = own[index] if index < len(own) else ["", ""]
                out.append(f"| {left[1]} | `{left[0]}` | | {right[1]} | `{right[0]}` |")
            out.append("")
    if not out:
        return []
    return ["## Profile (py-spy, server processes)", "", *out]


def read_raw(text: str) -> dict[str, Any]:
    """The JSON block of a written report."""
    block = text.split(RAW_BEGIN, 1)[1].split("```json", 1)[1].split("```", 1)[0]
    return json.loads(block)

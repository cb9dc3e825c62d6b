"""Processes the bench starts itself: server processes, the bare relay, and what /proc says about them."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Start-up includes imports, the schema check and rebuilding routing state: generous on a loaded machine.
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_kib(pid: int) -> int:
    """Resident set size (VmRSS) of a process, KiB."""
    return _status_field(pid, "VmRSS")


def hwm_kib(pid: int) -> int:
    """Peak resident set size (VmHWM) of a process, KiB."""
    return _status_field(pid, "VmHWM")


def _status_field(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {name}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, seconds (fields 14 and 15 of /proc/PID/stat)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may contain spaces: skip past ")"
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine since boot, from the first line of /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return total - idle, total


@dataclass
class CpuMeter:
    """CPU use of some processes over an interval, as % of one core; and how busy the whole machine was,
    as % of all its cores (the bench shares the machine: anything else running shows up there)."""

    pids: list[int]
    started: float = field(default_factory=time.monotonic)
    start_cpu: dict[int, float] = field(default_factory=dict)
    start_machine: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        self.start_cpu = {pid: _cpu_or_zero(pid) for pid in self.pids}
        self.start_machine = machine_ticks()

    def percent(self) -> dict[int, float]:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        return {pid: 100.0 * (_cpu_or_zero(pid) - self.start_cpu[pid]) / elapsed for pid in self.pids}

    def machine_percent(self) -> float:
        busy, total = machine_ticks()
        return 100.0 * (busy - self.start_machine[0]) / max(1, total - self.start_machine[1])


def wait_for_quiet(max_wait: float, threshold_pct: float = 25.0) -> dict[str, float]:
    """Wait (up to `max_wait` s) until the whole machine is below `threshold_pct` busy over a 1 s sample.
    The bench shares the machine; this keeps other work out of the figures when it comes and goes."""
    started = time.monotonic()
    while True:
        meter = CpuMeter([])
        time.sleep(1.0)
        busy = meter.machine_percent()
        waited = time.monotonic() - started
        if busy < threshold_pct or waited >= max_wait:
            return {"waited_s": round(waited, 1), "busy_before_pct": round(busy, 1)}


def load_average() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def _cpu_or_zero(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except OSError:
        return 0.0


@dataclass
class Proc:
    """A child process with its log file."""

    name: str
    port: int
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def spawn(name: str, argv: list[str], env: dict[str, str], log_dir: Path, port: int) -> Proc:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log_file:
        popen = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    return Proc(name, port, popen, log_path)


def start_servers(names: list[str], env: dict[str, str], log_dir: Path) -> list[Proc]:
    """`python -m nameplate serve` on free ports, started together; returns once every /healthz answers."""
    procs = []
    for name in names:
        port = free_port()
        argv = [sys.executable, "-m", "nameplate", "serve", "--host", "127.0.0.1", "--port", str(port)]
        procs.append(spawn(name, argv, env, log_dir, port))
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    waiting = list(procs)
    while waiting:
        proc = waiting[0]
        if not proc.alive():
            for other in procs:
                other.stop()
            raise RuntimeError(f"server {proc.name} exited during start-up:\n{proc.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{proc.base_url}/healthz", timeout=2).status_code == 200:
                waiting.pop(0)
                continue
        if time.monotonic() > deadline:
            for other in procs:
                other.stop()
            raise RuntimeError(
                f"server {proc.name} did not answer /healthz within {START_TIMEOUT_SECONDS:.0f}s:\n{proc.log_tail()}"
            )
        time.sleep(0.1)
    return procs


def start_relay(log_dir: Path, env: dict[str, str]) -> Proc:
    """`python -m bench.relay` on a free port; returns once it accepts connections."""
    port = free_port()
    proc = spawn("relay", [sys.executable, "-m", "bench.relay", "--port", str(port)], env, log_dir, port)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        if not proc.alive():
            raise RuntimeError(f"relay exited during start-up:\n{proc.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            if time.monotonic() > deadline:
                proc.stop()
                raise RuntimeError("relay did not start") from None
            time.sleep(0.05)

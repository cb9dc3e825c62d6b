"""`nameplate demo` as a real process: started from a folder, read until uvicorn says it is up, stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.harness import free_port


@dataclass
class DemoProcess:
    base_url: str
    output: str  # everything printed up to "Uvicorn running"


@contextlib.contextmanager
def running_demo(command: list[str], cwd: Path, timeout: float = 60.0) -> Iterator[DemoProcess]:
    """Run `command demo --port N` in `cwd` with no store or secret settings of ours leaking in; fails with
    the output if the server never comes up."""
    port = free_port()
    drop = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "PYTHONPATH")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    process = subprocess.Popen(
        [*command, "demo", "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if "Uvicorn running" in line or process.poll() is not None:
                break
        output = "".join(lines)
        assert "Uvicorn running" in output, output
        yield DemoProcess(f"http://127.0.0.1:{port}", output)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()

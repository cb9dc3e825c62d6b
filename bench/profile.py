"""Sampling profiles of the server processes under load, with py-spy (`pip install py-spy`).

`python -m bench --profile DIR` records each server process during the latency load (non-blocking
sampling, so the process is never paused) into DIR/<config>-<process>.txt in py-spy's "raw" format
(collapsed stacks: open it in https://www.speedscope.app or feed it to flamegraph.pl), and the report
lists the functions with the most samples, by self time and inclusive time.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

SAMPLES_PER_SECOND = 100
# Frames that say nothing about where the time goes (the loop itself, the coroutine trampolines).
NOISE = (
    "<module>",
    "run (asyncio/runners.py)",
    "run_until_complete (",
    "run_forever (",
    "_run_once (",
    "_run (asyncio",
    "serve (uvicorn",
    "_serve (uvicorn",
    "run (uvicorn",
    "main (",
    "_run_code (",
    "_run_module_as_main (",
    "run_server (server/cli.py)",
    "cmd_serve (server/cli.py)",
    "Runner.run (",
    "Server.serve (",
    "Server._serve (",
)


# Where a sample of the event loop belongs: the first rule whose marker appears anywhere on its stack.
CATEGORIES = (
    ("store: SQLAlchemy + DB driver", ("sqlalchemy/", "aiosqlite/", "asyncpg/")),
    ("broker: Redis client", ("redis/",)),
    ("frame validation (pydantic)", ("pydantic", "_validate (server/protocol.py)")),
    ("websocket framing, send, receive", ("websockets/", "websockets_sansio_impl", "starlette/websockets.py")),
    ("JSON encode / decode", ("json/",)),
    ("HTTP (visitor tokens, log-in)", ("httptools_impl", "h11_impl", "starlette/responses.py")),
    ("server code, other", ("server/",)),
)


# A sample whose innermost Python frame is the loop's entry point was taken while the thread ran C code
# under uvloop's run_forever: socket syscalls, C callbacks, or waiting to take the GIL back from a thread.
LOOP_ENTRY = ("Runner.run (", "run_until_complete (", "asyncio_run (", "run (asyncio/runners.py)")
LOOP_C = "event loop in C (uvloop syscalls and callbacks, GIL waits)"


def py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def start(targets: list[tuple[str, int]], seconds: float, folder: Path) -> list[tuple[Path, subprocess.Popen[bytes]]]:
    """Begin sampling each (name, pid) for `seconds`; returns the recorders to `finish`."""
    executable = py_spy()
    if executable is None:
        raise RuntimeError("py-spy is not installed: pip install py-spy")
    folder.mkdir(parents=True, exist_ok=True)
    recorders = []
    for name, pid in targets:
        output = folder / f"{name}.txt"
        argv = [
            executable,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, int(seconds))),
            "--rate",
            str(SAMPLES_PER_SECOND),
            "--format",
            "raw",
            "--nolineno",
            "--nonblocking",
            "--threads",
            "--output",
            str(output),
        ]
        recorders.append((output, subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)))
    return recorders


def finish(
    recorders: list[tuple[Path, subprocess.Popen[bytes]]], seconds: float, timeout: float = 60
) -> dict[str, Any]:
    summaries = {}
    for output, recorder in recorders:
        try:
            _, stderr = recorder.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            recorder.kill()
            _, stderr = recorder.communicate()
        if output.exists():
            summaries[output.stem] = {"file": str(output), **summarize(output, seconds)}
        else:
            summaries[output.stem] = {"file": None, "error": stderr.decode(errors="replace")[-500:]}
    return summaries


def summarize(path: Path, seconds: float, top: int = 20) -> dict[str, Any]:
    """The event loop's thread (MainThread): how busy it was (% of wall time) and where its samples went —
    self (innermost frame) and inclusive (anywhere on the stack), in % of its samples. Other threads
    (aiosqlite runs each SQLite connection on its own thread) only as busy % per thread name. SQLAlchemy's
    async layer runs its work in greenlets, whose stacks start afresh: `categories` assigns every sample to
    one kind of work by what is on its stack, so those are counted where they belong."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    main = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack.startswith("thread (") or not count_text.isdigit():
            continue  # a frame name with a newline in it (e.g. a Lua script's source) spills onto other lines
        count = int(count_text)
        thread, *frames = stack.split(";")
        name = thread.split(": ", 1)[-1]
        if name != "MainThread":
            threads[name.split(" (", 1)[-1].rstrip(")") if " (" in name else name] += count
            continue
        main += count
        joined = ";".join(frames)
        if not frames or any(entry in frames[-1] for entry in LOOP_ENTRY):
            category = LOOP_C
        else:
            category = next(
                (label for label, markers in CATEGORIES if any(m in joined for m in markers)),
                "asyncio, uvicorn, other Python",
            )
        categories[category] += count
        if frames:
            own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    expected = max(1.0, seconds * SAMPLES_PER_SECOND)

    def ranked(counter: Counter[str]) -> list[list[Any]]:
        rows = [(frame, n) for frame, n in counter.most_common() if not any(x in frame for x in NOISE)]
        return [[frame, round(100.0 * n / main, 1)] for frame, n in rows[:top]] if main else []

    return {
        "samples": main,
        "event_loop_busy_pct": round(100.0 * main / expected, 1),
        "other_threads_busy_pct": {name: round(100.0 * n / expected, 1) for name, n in threads.most_common(5)},
        "categories": [[label, round(100.0 * n / main, 1)] for label, n in categories.most_common()] if main else [],
        "self": ranked(own),
        "inclusive": ranked(inclusive),
    }

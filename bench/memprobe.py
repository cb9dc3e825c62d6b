"""Where an idle visitor socket's memory goes: tracemalloc inside a real server process.

    python -m bench.memprobe --connections 2000 [--config embedded] [--group lineno|filename|traceback]

Starts one server process through a small wrapper that turns tracemalloc on before `nameplate.cli.main`
runs `serve` (the server's code is unchanged) and writes a snapshot on SIGUSR1. Then it opens idle
visitors exactly like the idle scenario (hello, one message, ack), snapshots before and after, and prints
the allocation sites that grew the most, per socket. tracemalloc counts Python allocations only (not
what the allocator keeps or C libraries allocate on their own), and slows the server down: use it to
find what to shrink, and the idle scenario to measure it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
import tracemalloc
from pathlib import Path

from bench.clients import IdleWorker
from bench.deploy import CONFIGS, Deployment, SiteSeed
from bench.procs import REPO, free_port, rss_kib, spawn

SNAPSHOT_ENV = "BENCH_MEMPROBE_SNAPSHOT"


def serve_with_tracemalloc(port: int, frames: int) -> None:
    """The server process: tracemalloc on, a SIGUSR1 handler that dumps a snapshot, then `serve` as usual."""
    tracemalloc.start(frames)
    target = Path(os.environ[SNAPSHOT_ENV])

    def dump(_signum: int, _frame: object) -> None:
        snapshot = tracemalloc.take_snapshot()
        partial = target.with_suffix(".partial")
        snapshot.dump(str(partial))
        partial.replace(target)

    signal.signal(signal.SIGUSR1, dump)
    from nameplate.cli import main

    main(["serve", "--host", "127.0.0.1", "--port", str(port)])


def snapshot(pid: int, path: Path, timeout: float = 300) -> tracemalloc.Snapshot:
    path.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the server did not write its snapshot")
        time.sleep(0.2)
    return tracemalloc.Snapshot.load(str(path))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memprobe", description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--per-site", type=int, default=100)
    parser.add_argument("--config", choices=list(CONFIGS), default="embedded")
    parser.add_argument("--group", choices=["lineno", "filename", "traceback"], default="lineno")
    parser.add_argument("--frames", type=int, default=1, help="traceback depth kept per allocation")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # internal: be the server on this port
    args = parser.parse_args()
    if args.serve:
        serve_with_tracemalloc(args.serve, args.frames)
        return

    spec = CONFIGS[args.config]
    deployment = Deployment(spec, "memprobe")
    server = None
    try:
        deployment.prepare()
        sites = [SiteSeed(f"bench-idle-{i}") for i in range(-(-args.connections // args.per_site))]
        deployment.seed([*sites, SiteSeed("bench-warmup")])
        assert deployment._workdir is not None
        snapshot_path = deployment._workdir / "snapshot.bin"
        env = {**deployment.env(), SNAPSHOT_ENV: str(snapshot_path)}
        port = free_port()
        server = spawn(
            "memprobe",
            [sys.executable, "-m", "bench.memprobe", "--serve", str(port), "--frames", str(args.frames)],
            env,
            deployment._workdir / "logs",
            port,
        )
        deadline = time.monotonic() + 120
        import httpx

        while True:
            try:
                if httpx.get(f"{server.base_url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or not server.alive():
                raise RuntimeError(f"server did not start:\n{server.log_tail()}")
            time.sleep(0.2)
        targets = [
            {
                "base": server.base_url,
                "site": site.key,
                "count": min(args.per_site, args.connections - i * args.per_site),
            }
            for i, site in enumerate(sites)
        ]
        before, after, rss_before, rss_after, n = asyncio.run(
            _measure(server.base_url, server.pid, snapshot_path, targets)
        )
        stats = after.compare_to(before, args.group)
        traced = sum(s.size_diff for s in stats)
        print(
            f"{n} idle visitor sockets ({args.config}); RSS grew {(rss_after - rss_before) / n:.1f} KiB/socket "
            f"(under tracemalloc), traced Python allocations {traced / 1024 / n:.1f} KiB/socket\n"
        )
        print(f"{'KiB/socket':>10} {'blocks/socket':>13}  where")
        for stat in stats[: args.top]:
            where = (
                stat.traceback.format()[-1].strip()
                if args.group != "traceback"
                else " <- ".join(line.strip() for line in stat.traceback.format()[::-1] if not line.startswith("    "))
            )
            where = where.replace(str(REPO) + "/", "").replace(sys.prefix + "/lib/python3.11/site-packages/", "")
            print(f"{stat.size_diff / 1024 / n:10.2f} {stat.count_diff / n:13.1f}  {where}")
    finally:
        if server is not None:
            server.stop()
        deployment.teardown()


async def _measure(
    base: str, pid: int, path: Path, targets: list[dict[str, object]]
) -> tuple[tracemalloc.Snapshot, tracemalloc.Snapshot, int, int, int]:
    """Warm up, snapshot, open the visitors, snapshot — all in one event loop, so the sockets stay open."""
    warm = IdleWorker(1)
    await warm.open([{"base": base, "site": "bench-warmup", "count": 20}], 20, 120, "warm")
    await warm.close_all()
    await asyncio.sleep(2)
    before = await asyncio.to_thread(snapshot, pid, path)
    rss_before = rss_kib(pid)
    worker = IdleWorker(0)
    result = await worker.open(targets, 50, 3600, "probe")
    if result["failed"]:
        print(f"failed to open {result['failed']}: {result['failures']}", file=sys.stderr)
    await asyncio.sleep(2)
    after = await asyncio.to_thread(snapshot, pid, path)
    rss_after = rss_kib(pid)
    await worker.close_all()
    return before, after, rss_before, rss_after, max(1, result["opened"])


if __name__ == "__main__":
    main()

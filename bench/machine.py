"""Facts about the machine and software a run measured, written next to its figures."""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.procs import REPO

PACKAGES = (
    "websockets",
    "uvicorn",
    "starlette",
    "uvloop",
    "httptools",
    "sqlalchemy",
    "sqlmodel",
    "aiosqlite",
    "asyncpg",
    "redis",
    "pydantic",
    "pydantic-core",
    "alembic",
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return None


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def service_versions(postgres: bool, redis_used: bool) -> dict[str, str]:
    from bench.deploy import POSTGRES_ADMIN_DSN, REDIS_URL, _pg_admin

    found = {}
    if postgres:
        try:
            found["postgresql"] = str(asyncio.run(_pg_admin("SHOW server_version")))
        except Exception as exc:  # noqa: BLE001
            found["postgresql"] = f"unavailable ({POSTGRES_ADMIN_DSN}: {exc})"
    if redis_used:
        try:
            import redis

            found["redis"] = str(redis.Redis.from_url(REDIS_URL).info("server")["redis_version"])
        except Exception as exc:  # noqa: BLE001
            found["redis"] = f"unavailable ({exc})"
    return found


def facts(postgres: bool, redis_used: bool) -> dict[str, Any]:
    dirty = [line[3:] for line in _git("status", "--porcelain", "--", "server").splitlines()]
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": memory_gib(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "open_files_limit": _nofile(),
        "packages": versions(),
        "services": service_versions(postgres, redis_used),
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "server_files_uncommitted": dirty,
    }


def _nofile() -> int | None:
    try:
        import resource

        return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError):
        return None

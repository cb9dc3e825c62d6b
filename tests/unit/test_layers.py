"""The import direction of docs/architecture.md, checked: realtime/ and web/ → actions/ → services → store/
and broker/; protocol/ and infra/ are leaves. Read from the source with `ast`, so nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

SERVER = Path(__file__).resolve().parents[2] / "server"
ENDPOINTS = {"realtime", "web"}
SERVICES = {"chat", "routing", "people", "desk", "integrations", "insight", "mail"}
LOWER = {"store", "broker"}
LEAVES = {"protocol", "infra"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(folders: set[str]) -> list[Path]:
    return [path for folder in folders for path in (SERVER / folder).rglob("*.py") if "migrations" not in path.parts]


def _domain(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "nameplate" and len(parts) > 1 else None


def test_services_and_below_never_import_starlette() -> None:
    offenders = [
        str(path.relative_to(SERVER))
        for path in _modules(SERVICES | LOWER | LEAVES | {"actions"})
        if any(name.split(".")[0] == "starlette" for name in _imports(path))
    ]
    assert offenders == []


def test_endpoints_never_touch_sql() -> None:
    offenders = [
        str(path.relative_to(SERVER))
        for path in _modules(ENDPOINTS)
        if any(name.split(".")[0] in {"sqlalchemy", "sqlmodel"} for name in _imports(path))
    ]
    assert offenders == []


def test_store_and_broker_import_nothing_above_them() -> None:
    above = SERVICES | ENDPOINTS | {"actions", "services"}
    offenders = []
    for path in _modules(LOWER):
        for name in _imports(path):
            # The pairing rules are a pure function both broker backends run inside their atomic step.
            if _domain(name) in above and name != "nameplate.routing.plan":
                offenders.append(f"{path.relative_to(SERVER)} imports {name}")
    assert offenders == []


def test_services_never_import_actions_or_endpoints() -> None:
    offenders = [
        f"{path.relative_to(SERVER)} imports {name}"
        for path in _modules(SERVICES)
        for name in _imports(path)
        if _domain(name) in ENDPOINTS | {"actions"}
    ]
    assert offenders == []


def test_leaves_import_only_leaves() -> None:
    offenders = [
        f"{path.relative_to(SERVER)} imports {name}"
        for path in _modules(LEAVES)
        for name in _imports(path)
        if _domain(name) is not None and _domain(name) not in LEAVES | {"errors"}
    ]
    assert offenders == []

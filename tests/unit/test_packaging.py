"""pyproject.toml lists the import packages by hand (the source folder is `server/`, the package `nameplate`):
every folder of Python code under server/ must be on that list, or the wheel silently leaves it out."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_under_server_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {
        ".".join(("nameplate", *init.parent.relative_to(ROOT / "server").parts))
        for init in (ROOT / "server").rglob("__init__.py")
    }
    assert found, "no packages found under server/"
    assert found <= listed, f"missing from pyproject.toml packages: {sorted(found - listed)}"
    assert config["package-dir"]["nameplate"] == "server"


def test_nothing_imports_the_source_folder_by_its_name() -> None:
    """`server` is a folder, not a package name: importing it would load a second copy of every module."""
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("server", "tests", "bench")
        for path in (ROOT / folder).rglob("*.py")
        if any(
            line.startswith(("from server.", "from server import", "import server"))
            for line in path.read_text().splitlines()
        )
    ]
    assert offenders == []

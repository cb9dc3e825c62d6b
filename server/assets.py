"""Where the files the server serves live: beside the code in a wheel, beside `server/` in a checkout.

The wheel maps `widget/` and `agent_console/` into the package (`nameplate/widget`, `nameplate/agent_console`,
see pyproject.toml), so an installed server needs no checkout; a source checkout or an editable install
serves them from the repository's top-level folders, where the project keeps them.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def asset_dir(name: str) -> Path:
    installed = PACKAGE_DIR / name
    if installed.is_dir():
        return installed
    return PACKAGE_DIR.parent / name


WIDGET_DIR = asset_dir("widget")
CONSOLE_DIR = asset_dir("agent_console")

"""Shared fixtures: a running server seeded with the demo shop (three agents, two teams)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.harness import RunningServer, running_server, seed, test_settings


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(test_settings(tmp_path)) as running:
        await seed(running.nameplate)
        yield running

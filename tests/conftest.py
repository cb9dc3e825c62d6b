"""Shared fixtures: a running server seeded with the demo shop (three agents, two teams)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher, profiles

import nameplate.people.credentials

# Tests log in hundreds of times; argon2's production cost (by design ~0.1–1 s a hash) would dominate the
# suite. Same algorithm (argon2id), cheapest parameters — only inside the tests.
nameplate.people.credentials._hasher = PasswordHasher.from_parameters(profiles.CHEAPEST)

# Servers the tests start as processes read their settings from the environment: no wall-clock digests
# there either (see tests/harness.py).
os.environ.setdefault("DIGEST_TIME", "off")

from tests.harness import RunningServer, running_server, seeded_settings  # noqa: E402


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(await seeded_settings(tmp_path)) as running:
        yield running

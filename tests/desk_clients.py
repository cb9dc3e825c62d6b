"""Signed-in HTTP clients for the console and admin pages: log in as a demo person, find the CSRF token.

A test module imports `clients_fixture` and `many_logins` to use them (pytest finds fixtures by name)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from nameplate.web import login as login_module
from tests.harness import RunningServer

PASSWORD = "nameplate-demo"


@pytest.fixture(autouse=True)
def many_logins(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests log in again and again from one address: the throttle is not what they test."""
    monkeypatch.setattr(login_module, "LOGIN_ATTEMPTS", 1000)


@pytest.fixture(name="clients")
async def clients_fixture() -> AsyncIterator[list[httpx.AsyncClient]]:
    """The signed-in clients a test opened, closed after it (import the fixture into a test module)."""
    opened: list[httpx.AsyncClient] = []
    yield opened
    for client in opened:
        await client.aclose()


async def signed_in(server: RunningServer, clients: list[httpx.AsyncClient], email: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=server.base_url, timeout=10)
    clients.append(client)
    response = await client.post("/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return client


async def csrf_of(client: httpx.AsyncClient) -> str:
    page = await client.get("/profile")
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
    assert match, page.text[:300]
    return match.group(1)

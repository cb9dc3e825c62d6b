"""Failed log-ins are throttled per account and per address; successful ones never lock a team out."""

from __future__ import annotations

import httpx

from tests.harness import RunningServer


async def test_many_successful_logins_from_one_address_all_pass(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        for _ in range(4):
            for email in ("jane@acme.example", "tomas@acme.example", "priya@acme.example"):
                response = await http.post("/login", json={"email": email, "password": "nameplate-demo"})
                assert response.status_code == 200


async def test_five_failures_lock_the_account_even_for_the_right_password(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        for _ in range(5):
            wrong = await http.post("/login", json={"email": "jane@acme.example", "password": "guess-guess"})
            assert wrong.status_code == 401
        locked = await http.post("/login", json={"email": "jane@acme.example", "password": "nameplate-demo"})
        assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
        other = await http.post("/login", json={"email": "tomas@acme.example", "password": "nameplate-demo"})
        assert other.status_code == 429, "the address made five failed tries too"

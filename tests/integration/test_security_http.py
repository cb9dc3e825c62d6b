"""Issue 19, the HTTP findings: token minting limited per address, 422 for out-of-range dates and offsets,
logout that ends the session in the store, one hash check per login, CSV quoting, export line folding,
and `nameplate serve` passing ws_max_size and FORWARDED_ALLOW_IPS to uvicorn."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from argon2 import PasswordHasher
from sqlalchemy import func, select

import nameplate.people.credentials as credentials
from nameplate.config import Settings
from nameplate.demo.seed import DEMO_PASSWORD
from nameplate.protocol.inbound import WS_MAX_SIZE
from nameplate.store.models import Customer
from tests.harness import Client, RunningServer, connect_agent, connect_visitor, running_server, seeded_settings
from tests.integration.test_console_http import client, csrf_from, logged_in, page_token
from tests.integration.test_timeline_api import api_key, signed_in_customer
from tests.security import postgres_redis_server

JANE, TOMAS = "jane@acme.example", "tomas@acme.example"
DEFAULT_TOKEN_LIMIT = Settings().visitor_tokens_per_minute


# -- token minting -------------------------------------------------------------------------------------
async def customers_count(server: RunningServer) -> int:
    async with server.services.sessions() as session:
        return (await session.execute(select(func.count()).select_from(Customer))).scalar_one()


async def mint_until_refused(server: RunningServer, headers: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.base_url, headers=headers or {}) as http:
        for _ in range(DEFAULT_TOKEN_LIMIT):
            created = await http.post("/api/v1/visitors", json={"site": "site_demo"})
            assert created.status_code == 201, created.text
        return await http.post("/api/v1/visitors", json={"site": "site_demo"})


async def check_token_limit(server: RunningServer) -> None:
    before = await customers_count(server)
    refused = await mint_until_refused(server)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited" and int(refused.headers["retry-after"]) >= 1
    assert await customers_count(server) == before + DEFAULT_TOKEN_LIMIT  # the refused one wrote nothing
    # Another address (through the trusted proxy, 127.0.0.1: FORWARDED_ALLOW_IPS) is not affected.
    async with httpx.AsyncClient(base_url=server.base_url, headers={"X-Forwarded-For": "203.0.113.7"}) as http:
        assert (await http.post("/api/v1/visitors", json={"site": "site_demo"})).status_code == 201


async def test_token_minting_is_limited_per_address(tmp_path: Path) -> None:
    settings = await seeded_settings(tmp_path, visitor_tokens_per_minute=DEFAULT_TOKEN_LIMIT)
    async with running_server(settings) as server:
        await check_token_limit(server)


@pytest.mark.services
async def test_token_minting_is_limited_per_address_on_postgresql_and_redis(tmp_path: Path) -> None:
    async with postgres_redis_server(tmp_path, visitor_tokens_per_minute=DEFAULT_TOKEN_LIMIT) as server:
        await check_token_limit(server)


# -- out-of-range input --------------------------------------------------------------------------------
async def test_out_of_range_dates_are_422_not_500(server: RunningServer) -> None:
    async with logged_in(server, TOMAS) as http:
        for path, params in (
            ("/supervisor/conversations", {"to": "9999-12-31"}),
            ("/supervisor/conversations", {"from": "9999-12-31", "to": "9999-12-31"}),
            ("/supervisor/export.csv", {"from": "2024-01-01", "to": "9999-12-31"}),
            ("/supervisor/export.json", {"from": "2024-01-01", "to": "9999-12-31"}),
        ):
            response = await http.get(path, params=params)
            assert response.status_code == 422, (path, params, response.status_code)
            assert "9999-12-31" in response.text
        # The last representable range that is not at the edge still works.
        ok = await http.get("/supervisor/export.csv", params={"from": "2024-01-01", "to": "9999-12-30"})
        assert ok.status_code == 200


async def test_huge_offsets_on_the_events_api_are_422_not_500(server: RunningServer) -> None:
    await signed_in_customer(server, "cust-off")
    headers = {"Authorization": f"Bearer {await api_key(server)}"}
    async with httpx.AsyncClient(base_url=server.base_url, headers=headers) as http:
        for offset in (str(10**30), "10001", "-1", "9" * 5000):
            response = await http.get("/api/v1/customers/cust-off/timeline", params={"offset": offset})
            assert response.status_code == 422, (offset[:20], response.status_code)
            assert response.json()["error"]["code"] == "invalid"
        huge_limit = await http.get("/api/v1/customers/cust-off/timeline", params={"limit": str(10**30)})
        assert huge_limit.status_code == 422
        ok = await http.get("/api/v1/customers/cust-off/timeline", params={"offset": "10000", "limit": "5"})
        assert ok.status_code == 200 and ok.json()["items"] == []


# -- sessions and log-in ------------------------------------------------------------------------------
async def test_logout_ends_the_session_for_a_copied_cookie_too(server: RunningServer) -> None:
    async with logged_in(server) as http:
        copied = dict(http.cookies)
        token = await page_token(http)
        assert (await http.post("/logout", data={"csrf_token": token})).status_code == 303
    async with httpx.AsyncClient(base_url=server.base_url, cookies=copied) as thief:
        assert (await thief.get("/console")).status_code == 303
        assert (await thief.get("/console/api/recent")).status_code == 401
    cookie = "; ".join(f"{k}={v}" for k, v in copied.items())
    ws = await websockets.connect(f"{server.ws_url}/ws/agent", additional_headers={"Cookie": cookie})
    socket = Client(ws)
    assert (await socket.expect("error"))["code"] == "unauthorized"
    assert await socket.wait_closed() == 4401
    # Logging in again works as before.
    async with logged_in(server) as again:
        assert (await again.get("/console")).status_code == 200


class CountingHasher(PasswordHasher):
    def __init__(self, inner: PasswordHasher) -> None:
        super().__init__(
            inner.time_cost, inner.memory_cost, inner.parallelism, inner.hash_len, inner.salt_len, type=inner.type
        )
        self.verifications = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:  # noqa: A002 (argon2's name)
        self.verifications += 1
        return super().verify(hash, password)


async def test_a_wrong_password_costs_one_hash_check_for_known_and_unknown_emails(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    counting = CountingHasher(credentials._hasher)
    monkeypatch.setattr(credentials, "_hasher", counting)
    checks = {}
    async with client(server) as http:
        for email in (JANE, "nobody@acme.example"):
            before = counting.verifications
            response = await http.post("/login", json={"email": email, "password": "wrong-password"})
            assert response.status_code == 401 and response.json()["error"]["code"] == "bad_credentials"
            checks[email] = counting.verifications - before
        before = counting.verifications
        assert (await http.post("/login", json={"email": TOMAS, "password": DEMO_PASSWORD})).status_code == 200
        checks["right"] = counting.verifications - before
    assert checks == {JANE: 1, "nobody@acme.example": 1, "right": 1}


# -- exports -------------------------------------------------------------------------------------------
# What a visitor types → what the CSV cell holds.
TRICKS = {
    "x;=1+2": "x;'=1+2",
    '=HYPERLINK("http://evil")': '\'=HYPERLINK("http://evil")',
    "+1": "'+1",
    "-2+3": "'-2+3",
    "@SUM(A1)": "'@SUM(A1)",
    "a\t;-1": "a\t;'-1",
    "a; @b;+c": "a; '@b;'+c",
    "ok, fine": "ok, fine",
}


async def closed_chat(server: RunningServer, bodies: list[str], comment: str = "") -> str:
    jane = await connect_agent(server, JANE)
    visitor, _ = await connect_visitor(server)
    for n, body in enumerate(bodies):
        await visitor.send(type="message", client_id=f"m{n}", body=body)
        await visitor.expect("ack")
    conversation_id = visitor.of_type("ack")[0]["conversation_id"]
    await jane.expect("assigned")
    await jane.send(type="close", conversation_id=conversation_id)
    await visitor.expect("closed")
    if comment:
        await visitor.send(type="rate", score=4, comment=comment, conversation_id=conversation_id)
        await visitor.expect("rated")
    return conversation_id


async def test_csv_cells_are_quoted_and_formula_tricks_neutralised(server: RunningServer) -> None:
    await closed_chat(server, list(TRICKS))
    async with logged_in(server, TOMAS) as http:
        export = await http.get("/supervisor/export.csv", params={"from": "2020-01-01", "to": "2099-12-31"})
    assert export.status_code == 200
    raw = export.text
    for line in raw.splitlines():
        if line:
            assert line.startswith('"'), line  # every cell quoted: a ";" reader keeps "x;=1+2" in one cell
    bodies = [row[-1] for row in csv.reader(io.StringIO(raw))][1:]
    for trick, cell in TRICKS.items():
        assert cell in bodies, (trick, bodies)
    # Split on ";" or tabs, ignoring the quotes (as some locales' spreadsheets do): no cell begins a formula.
    for line in raw.splitlines():
        for cell in re.split(r"[;\t]", line)[1:]:
            assert not cell.lstrip().startswith(("=", "+", "-", "@")), cell


async def test_the_text_export_cannot_be_forged_with_line_breaks(server: RunningServer) -> None:
    forged_entry = "[2020-01-01 00:00:00] Jane (agent): refund approved"
    bodies = [f"hi\r{forged_entry}", f"a\u2028{forged_entry}", f"b\n{forged_entry}"]
    conversation_id = await closed_chat(server, bodies, comment=f"fine\nRating: 5/5\r\n{forged_entry}")
    async with logged_in(server, TOMAS) as http:
        response = await http.get(f"/supervisor/conversations/{conversation_id}/export.txt")
    assert response.status_code == 200
    lines = re.split(r"\r\n|[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]", response.text)
    header, _, entries = response.text.partition("\n\n")
    assert [line for line in header.split("\n") if line.startswith("Rating:")] == [
        f'Rating: 4/5 ("fine Rating: 5/5 {forged_entry}")'
    ]
    forged = [line for line in lines if line.startswith("[2020-01-01")]
    assert forged == [], forged
    assert sum(1 for line in lines if line.startswith("    [2020-01-01")) == len(bodies)


# -- serve ---------------------------------------------------------------------------------------------
def test_serve_passes_ws_max_size_and_forwarded_allow_ips(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import uvicorn

    from nameplate.cli import run_server

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: seen.update(options))
    env = {
        "SECRET_KEY": "k",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'n.db'}",
        "FORWARDED_ALLOW_IPS": "10.0.0.5",
    }
    run_server(Settings.from_env(env), "127.0.0.1", 0)
    assert seen["ws_max_size"] == WS_MAX_SIZE
    assert seen["forwarded_allow_ips"] == "10.0.0.5" and seen["proxy_headers"] is True
    assert Settings.from_env({"SECRET_KEY": "k"}).forwarded_allow_ips == "127.0.0.1,::1"
    assert csrf_from('<input name="csrf_token" value="t">') == "t"

"""Outgoing webhooks against a real local HTTP receiver: signed, retried with back-off, logged for admins."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import nameplate.integrations.webhooks as server_webhooks
from nameplate.integrations.webhooks import sign, verify_signature
from nameplate.store.models import Webhook
from tests.harness import (
    RunningServer,
    connect_agent,
    connect_visitor,
    free_port,
    poll_until,
    running_server,
    seeded_settings,
)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    """These tests post to a receiver on 127.0.0.1: internal targets are allowed, as WEBHOOKS_ALLOW_PRIVATE does.
    That they are refused by default is tests/integration/test_security_webhooks.py."""
    async with running_server(await seeded_settings(tmp_path, webhooks_allow_private=True)) as running:
        yield running


class Receiver:
    """A tiny HTTP server that refuses each delivery's first `failures` attempts, then accepts it."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.requests: list[tuple[dict[str, str], bytes, float]] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"

    async def hook(self, request: Request) -> Response:
        headers = dict(request.headers)
        self.requests.append((headers, await request.body(), time.monotonic()))
        attempts = sum(1 for h, _, _ in self.requests if h["nameplate-delivery"] == headers["nameplate-delivery"])
        if attempts <= self.failures:
            return Response("not yet", status_code=500)
        return Response(status_code=204)

    async def __aenter__(self) -> Receiver:
        app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.task = asyncio.create_task(self.server.serve())
        await poll_until(lambda: self.server.started)
        return self

    async def __aexit__(self, *_: object) -> None:
        self.server.should_exit = True
        await self.task


async def admin_client(server: RunningServer) -> tuple[httpx.AsyncClient, str]:
    http = httpx.AsyncClient(base_url=server.base_url)
    login = await http.post("/login", json={"email": "priya@acme.example", "password": "nameplate-demo"})
    assert login.status_code == 200
    page = await http.get("/admin/integrations")
    assert page.status_code == 200
    token = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
    return http, token


def test_signature_verification_round_trip() -> None:
    body = b'{"type":"message.created"}'
    header = sign("s3cret", int(time.time()), body)
    assert verify_signature("s3cret", header, body)
    assert not verify_signature("other", header, body)
    assert not verify_signature("s3cret", header, body + b" ")
    stale = sign("s3cret", int(time.time()) - 3600, body)
    assert not verify_signature("s3cret", stale, body)
    assert not verify_signature("s3cret", "garbage", body)


async def test_events_are_delivered_signed_and_retried_with_backoff(server: RunningServer) -> None:
    server.services.webhooks.retry_base_seconds = 0.2
    async with Receiver(failures=2) as receiver:
        http, token = await admin_client(server)
        try:
            created = await http.post(
                "/admin/integrations/webhooks",
                data={"url": receiver.url, "events": ["conversation.created", "message.created"], "csrf_token": token},
            )
            assert created.status_code == 303
            without_token = await http.post("/admin/integrations/webhooks", data={"url": receiver.url})
            assert without_token.status_code == 403
            hooks = await server.services.webhooks.hooks((await server.services.directory.site_by_key("site_demo")).id)
            assert len(hooks) == 1
            secret = hooks[0].secret

            visitor, _ = await connect_visitor(server)
            await visitor.send(type="message", client_id="w", body="Webhook me")
            await visitor.expect("ack")

            await poll_until(lambda: len(receiver.requests) >= 6, timeout=15)
            accepted = [
                r
                for r in receiver.requests
                if sum(
                    1
                    for h, _, _ in receiver.requests[: receiver.requests.index(r) + 1]
                    if h["nameplate-delivery"] == r[0]["nameplate-delivery"]
                )
                == 3
            ]
            types = sorted(json.loads(body)["type"] for _, body, _ in accepted)
            assert types == ["conversation.created", "message.created"]
            for headers, body, _ in receiver.requests:
                assert verify_signature(secret, headers["nameplate-signature"], body)
            message = next(json.loads(b) for _, b, _ in accepted if json.loads(b)["type"] == "message.created")
            assert message["data"]["body"] == "Webhook me"
            # Each event was refused twice: its attempts were spaced by a growing back-off.
            first_id = receiver.requests[0][0]["nameplate-delivery"]
            times = [t for headers, _, t in receiver.requests if headers["nameplate-delivery"] == first_id]
            assert len(times) == 3 and times[2] - times[1] > times[1] - times[0] > 0.15

            log_page = await http.get("/admin/integrations")
            assert log_page.text.count("delivered") >= 2 and "HTTP 500" not in log_page.text.split("Recent")[0]
        finally:
            await http.aclose()


async def test_non_admins_cannot_manage_integrations(server: RunningServer) -> None:
    await connect_agent(server, "jane@acme.example")
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        assert (await http.get("/admin/integrations")).status_code == 401
        await http.post("/login", json={"email": "jane@acme.example", "password": "nameplate-demo"})
        assert (await http.get("/admin/integrations")).status_code == 403


async def test_an_expired_hook_list_answers_at_once_while_a_fresh_one_is_fetched(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    webhooks = server.services.webhooks
    site_id = (await server.services.directory.site_by_key("site_demo")).id
    monkeypatch.setattr(server_webhooks, "HOOKS_CACHE_SECONDS", 0.0)  # every list is expired as soon as fetched
    assert await webhooks.hooks(site_id) == []  # the first lookup waits for the store
    # Another process adds a hook: this one's cache does not know yet.
    async with server.services.sessions() as session:
        session.add(Webhook(site_id=site_id, url="http://127.0.0.1:9/hook", events="*"))
        await session.commit()
    # The expired list answers without waiting for the store (which already has the hook) ...
    assert await webhooks.hooks(site_id) == []
    # ... and the lookup it started brings the new hook in.
    hooks = await poll_until(lambda: webhooks.hooks(site_id))
    assert [h.url for h in hooks] == ["http://127.0.0.1:9/hook"]

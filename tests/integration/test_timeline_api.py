"""The customer events API: site API keys, validation, idempotency, the merged timeline."""

from __future__ import annotations

import httpx

from nameplate.people.credentials import identity_hash
from tests.harness import RunningServer, connect_agent, connect_visitor


async def signed_in_customer(server: RunningServer, user_id: str) -> str:
    site = await server.services.directory.site_by_key("site_demo")
    visitor, _ = await connect_visitor(
        server, identify={"user_id": user_id, "user_hash": identity_hash(site.secret, user_id), "name": "Lin"}
    )
    await visitor.send(type="message", client_id="m", body="Hello about order 1142")
    await visitor.expect("ack")
    return visitor.of_type("welcome")[0]["customer"]["id"]


async def api_key(server: RunningServer, site_key: str = "site_demo") -> str:
    site = await server.services.directory.site_by_key(site_key)
    _, key = await server.services.api_keys.create(site.id, "tests")
    return key


EVENT = {
    "event_id": "call-1",
    "channel": "phone",
    "summary": "Called the store about order 1142",
    "details": "Asked whether the tent ships before Friday.",
    "agent_email": "jane@acme.example",
    "occurred_at": "2026-11-22T15:04:05Z",
}


async def test_events_are_validated_stored_once_and_merged_into_the_timeline(server: RunningServer) -> None:
    await signed_in_customer(server, "cust-9")
    key = await api_key(server)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=server.base_url, headers=headers) as http:
        bad = await http.post("/api/v1/customers/cust-9/events", json={"channel": "pigeon", "summary": ""})
        assert bad.status_code == 422
        fields = bad.json()["error"]["fields"]
        assert set(fields) >= {"event_id", "channel", "summary", "occurred_at"}
        assert "phone" in fields["channel"]
        future = await http.post(
            "/api/v1/customers/cust-9/events", json={**EVENT, "occurred_at": "2999-01-01T00:00:00Z"}
        )
        assert future.status_code == 422 and "occurred_at" in future.json()["error"]["fields"]

        first = await http.post("/api/v1/customers/cust-9/events", json=EVENT)
        again = await http.post("/api/v1/customers/cust-9/events", json={**EVENT, "summary": "changed"})
        assert first.status_code == 201 and again.status_code == 200
        assert again.json()["event"]["id"] == first.json()["event"]["id"]
        assert again.json()["event"]["summary"] == EVENT["summary"]
        await http.post(
            "/api/v1/customers/cust-9/events",
            json={
                **EVENT,
                "event_id": "visit-1",
                "channel": "store",
                "summary": "Visited the store",
                "occurred_at": "2026-11-20T10:00:00Z",
            },
        )

        timeline = (await http.get("/api/v1/customers/cust-9/events")).json()["items"]
        assert [item["kind"] for item in timeline] == ["conversation", "event", "event"]
        assert [item.get("summary") for item in timeline[1:]] == [EVENT["summary"], "Visited the store"]
        page = (await http.get("/api/v1/customers/cust-9/timeline?limit=1&offset=1")).json()
        assert [item["summary"] for item in page["items"]] == [EVENT["summary"]] and page["next_offset"] == 2


async def test_keys_are_required_scoped_to_their_site_and_revocable(server: RunningServer) -> None:
    await signed_in_customer(server, "cust-10")
    other = await server.services.directory.create_site("Other shop")
    other_key = await api_key(server, other.public_key)
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        assert (await http.post("/api/v1/customers/cust-10/events", json=EVENT)).status_code == 401
        wrong = await http.post(
            "/api/v1/customers/cust-10/events", json=EVENT, headers={"Authorization": "Bearer np_not-a-real-key"}
        )
        assert wrong.status_code == 401
        foreign = await http.post(
            "/api/v1/customers/cust-10/events", json=EVENT, headers={"Authorization": f"Bearer {other_key}"}
        )
        assert foreign.status_code == 404
        assert (
            await http.get("/api/v1/customers/cust-10/events", headers={"Authorization": f"Bearer {other_key}"})
        ).status_code == 404
        site = await server.services.directory.site_by_key("site_demo")
        record, key = await server.services.api_keys.create(site.id, "temporary")
        ok = await http.get("/api/v1/customers/cust-10/events", headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200
        await server.services.api_keys.revoke(site.id, record.id)
        revoked = await http.get("/api/v1/customers/cust-10/events", headers={"Authorization": f"Bearer {key}"})
        assert revoked.status_code == 401
    stored = await server.services.api_keys.list(site.id)
    assert all(key not in (k.key_hash, k.prefix) for k in stored)


async def test_an_event_reaches_the_agent_serving_the_customer(server: RunningServer) -> None:
    jane = await connect_agent(server, "jane@acme.example")
    await signed_in_customer(server, "cust-11")
    await jane.expect("assigned")
    key = await api_key(server)
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        response = await http.post(
            "/api/v1/customers/cust-11/events", json=EVENT, headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status_code == 201
    live = await jane.expect("customer_event")
    assert live["event"]["summary"] == EVENT["summary"] and live["event"]["channel"] == "phone"

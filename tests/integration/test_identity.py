"""Verified identity links a visitor to their customer record; nothing unverified ever reaches it."""

from __future__ import annotations

from nameplate.people.credentials import identity_hash
from nameplate.store.models import Conversation, Customer
from tests.harness import RunningServer, connect_agent, connect_visitor


async def site_secret(server: RunningServer) -> str:
    site = await server.services.directory.site_by_key("site_demo")
    assert site is not None
    return site.secret


async def verified_customer_with_history(server: RunningServer, user_id: str) -> tuple[str, str]:
    """A signed-in customer who chatted with Jane; returns (customer_id, conversation_id)."""
    secret = await site_secret(server)
    jane = await connect_agent(server, "jane@acme.example")
    visitor, _ = await connect_visitor(
        server, identify={"user_id": user_id, "user_hash": identity_hash(secret, user_id), "name": "Ada Byron"}
    )
    welcome = visitor.of_type("welcome")[0]
    assert welcome["customer"]["verified"] is True
    await visitor.send(type="message", client_id="x", body="My order 1142 is late")
    ack = await visitor.expect("ack")
    assigned = await jane.expect("assigned")
    await jane.send(type="close", conversation_id=assigned["conversation"]["id"])
    await visitor.expect("closed")
    await visitor.close()
    await jane.close()
    return welcome["customer"]["id"], ack["conversation_id"]


async def test_verified_identity_on_a_new_browser_reaches_the_same_customer_and_history(server: RunningServer) -> None:
    customer_id, conversation_id = await verified_customer_with_history(server, "user-1")
    secret = await site_secret(server)
    second, _ = await connect_visitor(
        server, identify={"user_id": "user-1", "user_hash": identity_hash(secret, "user-1")}
    )
    welcome = second.of_type("welcome")[0]
    assert welcome["customer"]["id"] == customer_id and welcome["customer"]["verified"]
    assert welcome["token"]  # the browser now holds a token for the verified record
    assert [c["id"] for c in welcome["earlier"]] == [conversation_id]
    assert welcome["earlier"][0]["agent"]["name"] == "Jane Chang-Katzenberg"
    await second.send(type="history", conversation_id=conversation_id)
    history = await second.expect("history")
    assert "My order 1142 is late" in [m["body"] for m in history["messages"]]


async def test_wrong_missing_or_swapped_hash_never_reaches_the_customer(server: RunningServer) -> None:
    customer_id, conversation_id = await verified_customer_with_history(server, "user-2")
    secret = await site_secret(server)
    attempts = [
        {"user_id": "user-2", "user_hash": identity_hash(secret, "user-3")},  # another id's hash
        {"user_id": "user-2", "user_hash": identity_hash("user-2", secret)},  # key and message swapped
        {"user_id": "user-2"},  # no hash at all
        {"user_id": "user-2", "user_hash": "zz"},
    ]
    for identify in attempts:
        visitor, _ = await connect_visitor(server, identify=identify)
        welcome = visitor.of_type("welcome")[0]
        assert welcome["customer"]["id"] != customer_id
        assert welcome["customer"]["verified"] is False
        assert welcome["earlier"] == []
        await visitor.send(type="history", conversation_id=conversation_id)
        assert (await visitor.expect("error"))["code"] == "not_found"
        # Naming the verified customer's conversation in hello does not hand it over either.
        again, _ = await connect_visitor(server, identify=identify, conversation_id=conversation_id, resume_after=0)
        assert again.of_type("welcome")[0]["conversation"] is None
        await again.send(type="ping")
        await again.expect("pong")
        assert not again.of_type("message")
    async with server.services.sessions() as session:
        customer = await session.get(Customer, customer_id)
    assert customer.external_id == "user-2" and customer.name == "Ada Byron"


async def test_required_verification_refuses_unverified_identify(server: RunningServer) -> None:
    customer_id, conversation_id = await verified_customer_with_history(server, "user-4")
    site = await server.services.directory.site_by_key("site_demo")
    site.require_verification = True
    async with server.services.sessions() as session:
        session.add(site)
        await session.commit()
    server.services.directory.forget_site("site_demo")
    visitor, _ = await connect_visitor(server, identify={"user_id": "user-4", "name": "Impostor"})
    assert (await visitor.expect("error"))["code"] == "verification_required"
    assert visitor.of_type("welcome")[0]["customer"]["id"] != customer_id
    await visitor.send(type="identify", user_id="user-4", user_hash="0" * 64)
    assert (await visitor.expect("error"))["code"] == "verification_required"
    await visitor.send(type="message", client_id="m", body="let me in")
    ack = await visitor.expect("ack")
    assert ack["conversation_id"] != conversation_id
    async with server.services.sessions() as session:
        mine = await session.get(Conversation, ack["conversation_id"])
        customer = await session.get(Customer, customer_id)
    assert mine.customer_id != customer_id and customer.name == "Ada Byron"


async def test_signing_in_mid_chat_keeps_the_conversation_and_merges_the_record(server: RunningServer) -> None:
    customer_id, _ = await verified_customer_with_history(server, "user-5")
    secret = await site_secret(server)
    visitor, _ = await connect_visitor(server)
    anonymous_id = visitor.of_type("welcome")[0]["customer"]["id"]
    await visitor.send(type="page", url="https://shop.example/checkout", title="Checkout")
    await visitor.send(type="message", client_id="before", body="Question before I sign in")
    ack = await visitor.expect("ack")
    await visitor.send(
        type="identify",
        user_id="user-5",
        user_hash=identity_hash(secret, "user-5"),
        attributes={"plan": "gold", "orders": 3},
    )
    identified = await visitor.expect("identified")
    assert identified["customer"]["id"] == customer_id and identified["token"]
    assert identified["conversation_id"] == ack["conversation_id"]
    await visitor.send(type="message", client_id="after", body="Signed in now")
    after = await visitor.expect("ack", lambda f: f["client_id"] == "after")
    assert after["conversation_id"] == ack["conversation_id"] and after["seq"] > ack["seq"]
    async with server.services.sessions() as session:
        conversation = await session.get(Conversation, ack["conversation_id"])
        anonymous = await session.get(Customer, anonymous_id)
        customer = await session.get(Customer, customer_id)
    assert conversation.customer_id == customer_id
    assert anonymous.merged_into == customer_id
    assert customer.attributes == {"plan": "gold", "orders": 3}
    assert customer.current_url == "https://shop.example/checkout"


async def test_bad_attributes_are_refused_with_a_clear_error(server: RunningServer) -> None:
    visitor, _ = await connect_visitor(server)
    bad = [
        {"1starts-with-digit": "x"},
        {"ok": {"nested": "object"}},
        {"long": "x" * 1025},
        {f"k{n}": n for n in range(51)},
    ]
    for attributes in bad:
        await visitor.send(type="identify", name="Ann", attributes=attributes)
        error = await visitor.expect("error")
        assert error["code"] == "invalid_attributes" and error["message"]
    await visitor.send(type="identify", name="Ann", attributes={"plan": "gold", "since": "2024-02-01", "vip": True})
    identified = await visitor.expect("identified")
    assert identified["customer"]["name"] == "Ann" and identified["customer"]["verified"] is False


async def test_signing_in_on_a_second_device_continues_the_open_conversation(server: RunningServer) -> None:
    secret = await site_secret(server)
    identify = {"user_id": "user-7", "user_hash": identity_hash(secret, "user-7")}
    phone, _ = await connect_visitor(server, identify=identify)
    await phone.send(type="message", client_id="p", body="Started on my phone")
    ack = await phone.expect("ack")
    laptop, _ = await connect_visitor(server)
    await laptop.send(type="identify", **identify)
    identified = await laptop.expect("identified")
    assert identified["conversation_id"] == ack["conversation_id"]
    replayed = await laptop.expect("message", lambda f: f["body"] == "Started on my phone")
    assert replayed["seq"] == ack["seq"]
    await laptop.send(type="message", client_id="l", body="Now on the laptop")
    assert (await laptop.expect("ack"))["conversation_id"] == ack["conversation_id"]
    assert (await phone.expect("message", lambda f: f["body"] == "Now on the laptop"))["author"]["kind"] == "visitor"

"""The console's HTTP side: log-in/out with CSRF and throttling, canned responses, profile and photos,
the customer card endpoint, and escaping of everything people typed."""

from __future__ import annotations

import contextlib
import io
import re
import struct
import zlib
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from PIL import Image
from sqlalchemy import update

from nameplate.demo.seed import DEMO_PASSWORD
from nameplate.store.models import Agent, Conversation, ConversationStatus, Customer, Message, Rating, utcnow
from tests.harness import RunningServer, connect_visitor

JANE = "jane@acme.example"
XSS_SCRIPT = "<script>alert(1)</script>"
XSS_IMG = "<img src=x onerror=alert(1)>"


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def client(server: RunningServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.base_url, follow_redirects=False, timeout=10)


async def form_login(http: httpx.AsyncClient, email: str = JANE, password: str = DEMO_PASSWORD) -> httpx.Response:
    page = await http.get("/login")
    return await http.post("/login", data={"email": email, "password": password, "csrf_token": csrf_from(page.text)})


@contextlib.asynccontextmanager
async def logged_in(server: RunningServer, email: str = JANE) -> AsyncIterator[httpx.AsyncClient]:
    async with client(server) as http:
        response = await form_login(http, email)
        assert response.status_code == 303, response.text
        yield http


async def page_token(http: httpx.AsyncClient, path: str = "/console") -> str:
    response = await http.get(path)
    assert response.status_code == 200, response.text
    return csrf_from(response.text)


async def agent_named(server: RunningServer, email: str) -> Agent:
    agent = await server.services.directory.agent_by_email(None, email)
    assert agent is not None
    return agent


def jpeg_bytes(width: int = 640, height: int = 400) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (40, 120, 200)).save(out, format="JPEG")
    return out.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def decompression_bomb(side: int = 20000) -> bytes:
    """A small, valid PNG (1-bit grey, all black) that unpacks to side×side pixels."""
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    idat = zlib.compress(row * side, 9)
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


# -- log in / log out -----------------------------------------------------------------------------------
async def test_login_page_renders_with_csrf_and_csp(server: RunningServer) -> None:
    async with client(server) as http:
        response = await http.get("/login")
    assert response.status_code == 200
    assert 'name="email"' in response.text and 'name="password"' in response.text
    assert csrf_from(response.text)
    assert "script-src" not in response.headers["content-security-policy"]  # default-src 'self' covers it
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"


async def test_form_login_without_csrf_token_is_refused(server: RunningServer) -> None:
    async with client(server) as http:
        await http.get("/login")
        missing = await http.post("/login", data={"email": JANE, "password": DEMO_PASSWORD})
        wrong = await http.post("/login", data={"email": JANE, "password": DEMO_PASSWORD, "csrf_token": "nope"})
        console = await http.get("/console")
    assert missing.status_code == 403
    assert wrong.status_code == 403
    assert "expired" in missing.text
    assert console.status_code == 303 and console.headers["location"] == "/login"


async def test_form_login_and_wrong_password(server: RunningServer) -> None:
    async with client(server) as http:
        bad = await form_login(http, password="not-the-password")
        assert bad.status_code == 401
        assert "do not match" in bad.text
        assert f'value="{JANE}"' in bad.text  # the e-mail stays filled in
        good = await form_login(http)
        assert good.status_code == 303 and good.headers["location"] == "/console"
        console = await http.get("/console")
        assert console.status_code == 200
        assert "Jane Chang-Katzenberg" in console.text
        assert (await http.get("/login")).headers["location"] == "/console"


async def test_json_login_stays_csrf_exempt(server: RunningServer) -> None:
    async with client(server) as http:
        response = await http.post("/login", json={"email": JANE, "password": DEMO_PASSWORD})
        assert response.status_code == 200
        assert response.json()["agent"]["name"] == "Jane Chang-Katzenberg"
        assert (await http.get("/console")).status_code == 200


async def test_sixth_try_is_throttled_with_retry_after(server: RunningServer) -> None:
    async with client(server) as http:
        for _ in range(5):
            assert (await form_login(http, password="wrong-password")).status_code == 401
        throttled = await form_login(http)  # even the right password waits now
    assert throttled.status_code == 429
    assert int(throttled.headers["retry-after"]) > 0
    assert "Too many log-in attempts" in throttled.text


async def test_logout_requires_csrf(server: RunningServer) -> None:
    async with logged_in(server) as http:
        refused = await http.post("/logout")
        assert refused.status_code == 403
        assert (await http.get("/console")).status_code == 200  # still signed in
        token = await page_token(http)
        done = await http.post("/logout", data={"csrf_token": token})
        assert done.status_code == 303 and done.headers["location"] == "/login"
        assert (await http.get("/console")).status_code == 303


async def test_console_pages_need_a_session(server: RunningServer) -> None:
    async with client(server) as http:
        for path in ("/console", "/profile", "/settings/canned"):
            response = await http.get(path)
            assert response.status_code == 303 and response.headers["location"] == "/login", path
        for path in ("/console/api/canned", "/console/api/recent", "/console/api/customers/x"):
            response = await http.get(path)
            assert response.status_code == 401, path
            assert response.json()["error"]["code"] == "unauthorized"


# -- canned responses -------------------------------------------------------------------------------------
async def test_canned_responses_crud_with_csrf(server: RunningServer) -> None:
    async with logged_in(server) as http:
        token = await page_token(http, "/settings/canned")
        refused = await http.post("/settings/canned", data={"action": "create", "shortcut": "x", "body": "y"})
        assert refused.status_code == 403

        created = await http.post(
            "/settings/canned",
            data={
                "csrf_token": token,
                "action": "create",
                "shortcut": "/Shipping",
                "body": "We ship within 3 days.",
            },
        )
        assert created.status_code == 303
        listing = await http.get("/console/api/canned")
        canned = listing.json()["canned"]
        assert [(c["shortcut"], c["body"]) for c in canned] == [("shipping", "We ship within 3 days.")]
        assert "/shipping" in (await http.get("/settings/canned")).text

        duplicate = await http.post(
            "/settings/canned",
            data={
                "csrf_token": token,
                "action": "create",
                "shortcut": "shipping",
                "body": "again",
            },
        )
        assert duplicate.status_code == 409 and "already exists" in duplicate.text
        for shortcut, body, message in (
            ("two words", "x", "only contain letters"),
            ("a" * 41, "x", "limited to 40"),
            ("ok", "x" * 2001, "limited to 2000"),
            ("ok", "   ", "text is required"),
        ):
            bad = await http.post(
                "/settings/canned",
                data={
                    "csrf_token": token,
                    "action": "create",
                    "shortcut": shortcut,
                    "body": body,
                },
            )
            assert bad.status_code == 400, shortcut
            assert message in bad.text

        # Another site's response cannot be deleted from here.
        other_site = await server.services.directory.create_site("Other shop")
        from nameplate.desk.canned import CannedResponses

        foreign = await CannedResponses(server.services.sessions).create(other_site.id, "theirs", "Not yours")
        foreign_delete = await http.post(
            "/settings/canned",
            data={
                "csrf_token": token,
                "action": "delete",
                "id": foreign.id,
            },
        )
        assert foreign_delete.status_code == 404
        assert "theirs" not in (await http.get("/settings/canned")).text

        no_token_delete = await http.post("/settings/canned", data={"action": "delete", "id": canned[0]["id"]})
        assert no_token_delete.status_code == 403
        deleted = await http.post(
            "/settings/canned",
            data={
                "csrf_token": token,
                "action": "delete",
                "id": canned[0]["id"],
            },
        )
        assert deleted.status_code == 303
        assert (await http.get("/console/api/canned")).json()["canned"] == []


# -- profile and photo ------------------------------------------------------------------------------------
async def test_profile_requires_both_names_and_refreshes_the_card(server: RunningServer) -> None:
    jane = await agent_named(server, JANE)
    await server.services.directory.card(jane.id)  # warm the cache the widget reads through
    async with logged_in(server) as http:
        token = await page_token(http, "/profile")
        blank = await http.post(
            "/profile",
            data={
                "csrf_token": token,
                "action": "details",
                "given_name": "   ",
                "family_name": "Chang",
                "title": "",
                "intro": "",
            },
        )
        assert blank.status_code == 400 and "Given name is required" in blank.text
        missing_family = await http.post(
            "/profile",
            data={
                "csrf_token": token,
                "action": "details",
                "given_name": "Jane",
                "family_name": "",
            },
        )
        assert missing_family.status_code == 400 and "Family name is required" in missing_family.text
        no_csrf = await http.post("/profile", data={"action": "details", "given_name": "A", "family_name": "B"})
        assert no_csrf.status_code == 403

        saved = await http.post(
            "/profile",
            data={
                "csrf_token": token,
                "action": "details",
                "given_name": " Jane ",
                "family_name": "Chang",
                "title": "Care lead",
                "intro": "Ask me about tents.",
            },
        )
        assert saved.status_code == 303
        page = await http.get(saved.headers["location"])
        assert "Your profile is saved." in page.text and "Care lead" in page.text
    card = await server.services.directory.card(jane.id)
    assert (card["name"], card["title"], card["intro"]) == ("Jane Chang", "Care lead", "Ask me about tents.")


async def test_photo_upload_is_resized_and_served(server: RunningServer) -> None:
    jane = await agent_named(server, JANE)
    before = jane.photo_version
    async with logged_in(server) as http:
        token = await page_token(http, "/profile")
        response = await http.post(
            "/profile",
            data={"csrf_token": token, "action": "photo"},
            files={"photo": ("me.jpg", jpeg_bytes(900, 500), "image/jpeg")},
        )
        assert response.status_code == 303, response.text
        agent = await agent_named(server, JANE)
        assert agent.photo_version == before + 1
        assert agent.photo_url and agent.photo_url in (await http.get("/profile")).text
        served = await http.get(agent.photo_url)
    assert served.status_code == 200 and served.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(served.content)) as image:
        assert image.format == "JPEG" and image.size == (256, 256)
    card = await server.services.directory.card(jane.id)
    assert card["photo_url"] == agent.photo_url


@pytest.mark.parametrize(
    ("filename", "payload", "status", "message"),
    [
        ("notes.png", b"just some text, not an image\n" * 10, 400, "not a readable PNG, JPEG or WebP image"),
        ("huge.jpg", b"\xff\xd8" + b"\x00" * (2 * 1024 * 1024 + 10), 413, "Photos are limited to 2 MB"),
        ("bomb.png", None, 400, "PNG, JPEG or WebP"),
    ],
    ids=["text-named-png", "over-2-mb", "decompression-bomb"],
)
async def test_bad_photos_are_refused_with_a_clear_message(
    server: RunningServer, filename: str, payload: bytes | None, status: int, message: str
) -> None:
    data = payload if payload is not None else decompression_bomb()
    if payload is None:
        assert len(data) < 200_000  # small on the wire, 400 million pixels inside
    jane = await agent_named(server, JANE)
    async with logged_in(server) as http:
        token = await page_token(http, "/profile")
        response = await http.post(
            "/profile",
            data={"csrf_token": token, "action": "photo"},
            files={"photo": (filename, data, "image/png")},
        )
    assert response.status_code == status
    assert message in response.text
    assert 'class="alert alert-error"' in response.text
    assert (await agent_named(server, JANE)).photo_version == jane.photo_version


async def test_photo_just_over_the_limit_reaches_the_validator(server: RunningServer) -> None:
    async with logged_in(server) as http:
        token = await page_token(http, "/profile")
        response = await http.post(
            "/profile",
            data={"csrf_token": token, "action": "photo"},
            files={"photo": ("big.jpg", b"\xff\xd8" + b"\x00" * (2 * 1024 * 1024), "image/jpeg")},
        )
    assert response.status_code == 413 and "Photos are limited to 2 MB" in response.text


# -- customer card and recent conversations ---------------------------------------------------------------
async def seed_history(server: RunningServer, customer_id: str, agent_id: str) -> str:
    """A closed, rated conversation of this customer with this agent; returns its id."""
    async with server.services.sessions() as session:
        customer = await session.get(Customer, customer_id)
        assert customer is not None
        earlier = Conversation(
            site_id=customer.site_id,
            customer_id=customer_id,
            agent_id=agent_id,
            status=ConversationStatus.closed.value,
            last_seq=1,
            created_at=utcnow() - timedelta(days=3),
            assigned_at=utcnow() - timedelta(days=3),
            closed_at=utcnow() - timedelta(days=3) + timedelta(minutes=9),
        )
        session.add(earlier)
        await session.flush()
        session.add(Message(conversation_id=earlier.id, seq=1, author_kind="visitor", body="Where is my order?"))
        session.add(Rating(conversation_id=earlier.id, score=5, comment="Jane was great"))
        await session.commit()
        return earlier.id


async def test_customer_endpoint_is_site_checked(server: RunningServer) -> None:
    jane = await agent_named(server, JANE)
    visitor, _ = await connect_visitor(server, timezone="Europe/Oslo", locale="nb-NO")
    customer_id = visitor.frames[0]["customer"]["id"]
    await visitor.send(type="page", url="https://shop.example/checkout", title="Checkout")
    await visitor.send(type="message", client_id="m1", body="Hello")
    await visitor.expect("ack")
    earlier = await seed_history(server, customer_id, jane.id)

    other_site = await server.services.directory.create_site("Other shop")
    async with server.services.sessions() as session:
        stranger = Customer(site_id=other_site.id, name="Someone Else")
        session.add(stranger)
        await session.commit()

    async with logged_in(server) as http:
        response = await http.get(f"/console/api/customers/{customer_id}")
        assert response.status_code == 200
        assert response.headers["x-content-type-options"] == "nosniff"
        body = response.json()
        assert body["customer"]["id"] == customer_id
        assert body["customer"]["timezone"] == "Europe/Oslo"
        assert body["customer"]["verified"] is False
        assert body["pages"][0] == {**body["pages"][0], "url": "https://shop.example/checkout", "title": "Checkout"}
        previous = {c["id"]: c for c in body["conversations"]}
        assert previous[earlier]["agent"]["name"] == "Jane Chang-Katzenberg"
        assert previous[earlier]["rating"] == {"score": 5, "comment": "Jane was great"}
        assert len(previous) == 2  # the earlier one and today's

        foreign = await http.get(f"/console/api/customers/{stranger.id}")
        assert foreign.status_code == 404 and foreign.json()["error"]["code"] == "not_found"
        assert (await http.get("/console/api/customers/does-not-exist")).status_code == 404

        recent = (await http.get("/console/api/recent")).json()["conversations"]
        assert [r["id"] for r in recent] == [earlier]
        assert recent[0]["rating"]["score"] == 5
    await visitor.close()


async def test_conversation_summary_endpoint_is_site_checked(server: RunningServer) -> None:
    visitor, _ = await connect_visitor(server)
    await visitor.send(type="message", client_id="m1", body="Anyone?")
    ack = await visitor.expect("ack")
    async with logged_in(server) as http:  # Jane is not connected: the chat waits in the queue
        ok = await http.get(f"/console/api/conversations/{ack['conversation_id']}")
        assert ok.status_code == 200 and ok.json()["conversation"]["status"] == "queued"
        assert (await http.get("/console/api/conversations/nope")).status_code == 404
    await visitor.close()


# -- escaping ---------------------------------------------------------------------------------------------
async def test_everything_typed_is_escaped_on_every_page(server: RunningServer) -> None:
    jane = await agent_named(server, JANE)
    visitor, _ = await connect_visitor(server)
    customer_id = visitor.frames[0]["customer"]["id"]
    await visitor.send(type="page", url="https://shop.example/x", title=XSS_IMG)
    await visitor.send(type="message", client_id="m1", body=XSS_SCRIPT)
    await visitor.expect("ack")
    async with server.services.sessions() as session:
        await session.execute(
            update(Customer)
            .where(Customer.id == customer_id)
            .values(
                name=XSS_SCRIPT,
                email="x@example.com",
                attributes={"plan": XSS_IMG, XSS_SCRIPT: "key"},
            )
        )
        await session.commit()
    await seed_history(server, customer_id, jane.id)

    async with logged_in(server) as http:
        token = await page_token(http, "/profile")
        saved = await http.post(
            "/profile",
            data={
                "csrf_token": token,
                "action": "details",
                "given_name": XSS_SCRIPT,
                "family_name": XSS_IMG,
                "title": XSS_IMG,
                "intro": XSS_SCRIPT,
            },
        )
        assert saved.status_code == 303
        await http.post(
            "/settings/canned",
            data={
                "csrf_token": token,
                "action": "create",
                "shortcut": "xss",
                "body": XSS_IMG + XSS_SCRIPT,
            },
        )
        bad_canned = await http.post(
            "/settings/canned",
            data={
                "csrf_token": token,
                "action": "create",
                "shortcut": XSS_SCRIPT,
                "body": XSS_SCRIPT,
            },
        )
        assert bad_canned.status_code == 400
        async with client(server) as anonymous:
            failed = await form_login(anonymous, email=XSS_SCRIPT, password="x")
        pages = {
            "/console": await http.get("/console"),
            "/profile": await http.get("/profile"),
            "/settings/canned": await http.get("/settings/canned"),
            "/settings/canned (error)": bad_canned,
            "/login (failed)": failed,
        }
        for name, response in pages.items():
            html = response.text
            assert XSS_SCRIPT not in html, name
            assert XSS_IMG not in html, name
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, name
        assert "&lt;img src=x onerror=alert(1)&gt;" in pages["/profile"].text

        # Customer data reaches the console only as JSON (rendered with textContent), never as HTML.
        card = await http.get(f"/console/api/customers/{customer_id}")
        assert card.headers["content-type"].startswith("application/json")
        assert card.headers["x-content-type-options"] == "nosniff"
        assert card.json()["customer"]["name"] == XSS_SCRIPT
        assert card.json()["customer"]["attributes"]["plan"] == XSS_IMG
        assert card.json()["pages"][0]["title"] == XSS_IMG
    await visitor.close()

"""`nameplate demo`: a fresh database with one shop, three named agents with portraits, and two teams.

`seed_showcase` adds what makes the product visible in the first minute: canned responses, and a
signed-in customer (Sam Rivera) with attributes, a past conversation with Jane rated 5 with a comment,
events from other channels on the timeline and recent pages. `/demo/signed-in` is the shop page as Sam
sees it: it calls `Nameplate.identify` with a hash computed on the server, so the widget offers
"Continue with Jane?" and the console shows Verified, the attributes and the timeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from nameplate.desk.canned import CannedResponses
from nameplate.people.photos import store_photo
from nameplate.services import Services
from nameplate.store.models import (
    AuthorKind,
    Conversation,
    ConversationStatus,
    Customer,
    Message,
    PageView,
    Rating,
    Role,
    utcnow,
)

ASSETS = Path(__file__).resolve().parent / "assets"
DEMO_PASSWORD = "nameplate-demo"
DEMO_SITE_KEY = "site_demo"


@dataclass(frozen=True)
class DemoAgent:
    given_name: str
    family_name: str
    title: str
    intro: str
    email: str
    role: str
    portrait: str
    teams: tuple[str, ...]


DEMO_AGENTS = (
    DemoAgent(
        "Jane",
        "Chang-Katzenberg",
        "Customer Care",
        "Eight years of helping hikers find gear that fits. Ask me anything.",
        "jane@acme.example",
        Role.agent,
        "jane.png",
        ("Support",),
    ),
    DemoAgent(
        "Tomás",
        "Okafor-Lindqvist",
        "Orders & Returns",
        "I look after orders, deliveries and returns — and the people waiting for them.",
        "tomas@acme.example",
        Role.supervisor,
        "tomas.png",
        ("Support", "Sales"),
    ),
    DemoAgent(
        "Priya",
        "Ramanathan",
        "Gear Specialist",
        "Former mountain guide. I'll tell you honestly what you need and what you don't.",
        "priya@acme.example",
        Role.admin,
        "priya.png",
        ("Sales",),
    ),
)


async def seed_demo(services: Services, origins: str, showcase: bool = False) -> list[DemoAgent]:
    """The shop, its agents and teams; with `showcase`, also `seed_showcase` (the tests' template leaves it
    out, so that their counts of conversations and customers start from nothing)."""
    directory = services.directory
    site = await directory.create_site("Acme Outdoor", allowed_origins=origins, public_key=DEMO_SITE_KEY)
    teams = {name: await directory.create_team(site.id, name) for name in ("Sales", "Support")}
    for person in DEMO_AGENTS:
        agent = await directory.create_agent(
            site.id,
            given_name=person.given_name,
            family_name=person.family_name,
            email=person.email,
            password=DEMO_PASSWORD,
            title=person.title,
            intro=person.intro,
            role=person.role,
        )
        await store_photo(services.sessions, agent.id, (ASSETS / person.portrait).read_bytes())
        for team in person.teams:
            await directory.join_team(agent.id, teams[team].id)
    if showcase:
        await seed_showcase(services, site.id)
    return list(DEMO_AGENTS)


# The demo's signed-in shopper, as the shop's own user database knows them.
DEMO_CUSTOMER: dict[str, Any] = {
    "user_id": "acme-user-1142",
    "name": "Sam Rivera",
    "email": "sam.rivera@example.com",
    "attributes": {"plan": "Trail Club", "orders": 7, "lifetime_value_eur": 1240, "member_since": "2021-04-17"},
}

DEMO_CANNED = (
    ("hello", "Hi, thanks for getting in touch! I'm here and reading your message now."),
    ("returns", "You can return anything unused within 60 days — I'll e-mail you a prepaid label right away."),
    ("shipping", "Orders placed before 2 pm ship the same day; delivery in the EU takes 2–4 working days."),
    ("warranty", "Our boots and tents carry a 3-year warranty on seams and zips. A photo of the fault is all I need."),
    ("thanks", "Thank you for shopping with Acme Outdoor — enjoy the trail!"),
)

# (minutes after the start, who, text): a past chat between Sam and Jane, three days ago.
PAST_CHAT = (
    (0, AuthorKind.visitor.value, "Hi! The zip on my Trail tent jammed on the first night out."),
    (1, AuthorKind.agent.value, "Hi Sam, I'm Jane. Sorry about that — which colour is yours, and when did it arrive?"),
    (2, AuthorKind.visitor.value, "The green one, delivered in May."),
    (
        3,
        AuthorKind.agent.value,
        "That is covered by the warranty. I've sent a replacement zip kit and a prepaid label.",
    ),
    (4, AuthorKind.visitor.value, "Brilliant, thank you!"),
)
PAST_CHAT_NOTE = "Zip batch 7 again — third report this month. Told Priya."

TIMELINE = (
    ("demo-call-1", "phone", "Called about the replacement zip kit", "Confirmed the kit arrived; fitted fine.", 2),
    ("demo-store-1", "store", "Visited the Oslo store", "Tried on the Ridgeline boots (size 43).", 1),
    ("demo-email-1", "email", "Asked about the Trail Club discount", "Sent the member price list.", 0),
)


async def seed_showcase(services: Services, site_id: str) -> Customer:
    """Canned responses and a signed-in customer with history (see the module docstring)."""
    canned = CannedResponses(services.sessions)
    for shortcut, body in DEMO_CANNED:
        await canned.create(site_id, shortcut, body)
    jane = await services.directory.agent_by_email(site_id, DEMO_AGENTS[0].email)
    assert jane is not None
    now = utcnow()
    started = now - timedelta(days=3, hours=2)
    customer = Customer(
        site_id=site_id,
        external_id=DEMO_CUSTOMER["user_id"],
        name=DEMO_CUSTOMER["name"],
        email=DEMO_CUSTOMER["email"],
        verified=True,
        attributes=dict(DEMO_CUSTOMER["attributes"]),
        last_seen_at=started,
    )
    lines: list[tuple[int, str, str, bool]] = [(minute, kind, body, False) for minute, kind, body in PAST_CHAT]
    lines.insert(3, (3, AuthorKind.agent.value, PAST_CHAT_NOTE, True))
    lines.append((5, AuthorKind.system.value, f"{jane.full_name} closed the conversation.", False))
    async with services.sessions() as session:
        session.add(customer)
        await session.flush()
        conversation = Conversation(
            site_id=site_id,
            customer_id=customer.id,
            status=ConversationStatus.closed.value,
            agent_id=jane.id,
            last_seq=len(lines),
            visitor_read_seq=len(lines),
            agent_read_seq=len(lines),
            created_at=started,
            assigned_at=started,
            first_agent_reply_at=started + timedelta(minutes=1),
            closed_at=started + timedelta(minutes=5),
        )
        session.add(conversation)
        await session.flush()
        for seq, (minute, kind, body, private) in enumerate(lines, start=1):
            session.add(
                Message(
                    conversation_id=conversation.id,
                    seq=seq,
                    author_kind=kind,
                    agent_id=jane.id if kind == AuthorKind.agent.value else None,
                    body=body,
                    private=private,
                    created_at=started + timedelta(minutes=minute, seconds=seq),
                )
            )
        session.add(
            Rating(
                conversation_id=conversation.id,
                score=5,
                comment="Jane sorted it in five minutes. Lovely!",
                created_at=started + timedelta(minutes=6),
            )
        )
        for hours, (url, title) in enumerate((("/demo", "Acme Outdoor"), ("/demo?page=boots", "Hiking boots"))):
            session.add(PageView(customer_id=customer.id, url=url, title=title, viewed_at=now - timedelta(hours=hours)))
        await session.commit()
    for event_id, channel, summary, details, days_ago in TIMELINE:
        occurred = (now - timedelta(days=days_ago, hours=3)).isoformat()
        await services.timeline.record(
            customer,
            {
                "event_id": event_id,
                "channel": channel,
                "summary": summary,
                "details": details,
                "agent_email": DEMO_AGENTS[0].email if channel == "phone" else None,
                "occurred_at": occurred,
            },
        )
    return customer

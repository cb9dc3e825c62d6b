"""`nameplate demo`: a fresh database with one shop, three named agents with portraits, and two teams."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nameplate.people.photos import store_photo
from nameplate.services import Services
from nameplate.store.models import Role

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


async def seed_demo(services: Services, origins: str) -> list[DemoAgent]:
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
    return list(DEMO_AGENTS)

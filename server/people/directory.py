"""Sites, agents and teams: creation, look-up, and the public card that shows an agent as a person."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from nameplate.errors import NameplateError, NotFound
from nameplate.infra.refreshing_cache import RefreshingCache
from nameplate.people.credentials import hash_password
from nameplate.protocol.vocabulary import ErrorCode
from nameplate.store.engine import Sessions
from nameplate.store.models import Agent, AgentTeam, Role, Site, Team

# Agent cards go on every message frame and a site is looked up by key at every hello; a short cache
# spares a query each time. 30 s: an edit made through another process shows up quickly, and the editing
# process drops its own entry at once.
CARD_TTL_SECONDS = 30.0


def agent_card(agent: Agent) -> dict[str, Any]:
    """How an agent appears to visitors: a real person, full name, title, intro and photo."""
    return {
        "id": agent.id,
        "name": agent.full_name,
        "given_name": agent.given_name,
        "family_name": agent.family_name,
        "title": agent.title,
        "intro": agent.intro,
        "photo_url": agent.photo_url,
    }


def clean_name(value: str | None, field: str) -> str:
    cleaned = " ".join((value or "").split())
    if not cleaned:
        raise NameplateError(ErrorCode.invalid, f"{field} is required")
    if len(cleaned) > 100:
        raise NameplateError(ErrorCode.invalid, f"{field} is limited to 100 characters")
    return cleaned


class Directory:
    def __init__(self, sessions: Sessions, default_capacity: int) -> None:
        self._sessions = sessions
        self._default_capacity = default_capacity
        self._cards = RefreshingCache("agent card", lambda: CARD_TTL_SECONDS, self._load_card)
        # A key not found is not kept: the site may be created in a moment.
        self._sites = RefreshingCache(
            "site with key", lambda: CARD_TTL_SECONDS, self._load_site, keep=lambda site: site is not None
        )

    # -- sites ---------------------------------------------------------------------------------------
    async def create_site(self, name: str, allowed_origins: str = "", public_key: str | None = None) -> Site:
        site = Site(name=clean_name(name, "site name"), allowed_origins=allowed_origins)
        if public_key:
            site.public_key = public_key
        async with self._sessions() as session:
            session.add(site)
            await session.commit()
        return site

    async def site_by_key(self, public_key: str) -> Site | None:
        return await self._sites.get(public_key)

    async def _load_site(self, public_key: str) -> Site | None:
        async with self._sessions() as session:
            return (await session.execute(select(Site).where(col(Site.public_key) == public_key))).scalar_one_or_none()

    def forget_site(self, public_key: str) -> None:
        """The site's settings changed: the next hello reads them from the store."""
        self._sites.forget(public_key)

    async def site(self, site_id: str) -> Site:
        async with self._sessions() as session:
            site = await session.get(Site, site_id)
        if site is None:
            raise NotFound("no such site")
        return site

    async def sites(self) -> list[Site]:
        async with self._sessions() as session:
            return list((await session.execute(select(Site).order_by(col(Site.created_at)))).scalars())

    # -- agents --------------------------------------------------------------------------------------
    async def create_agent(
        self,
        site_id: str,
        *,
        given_name: str,
        family_name: str,
        email: str,
        password: str,
        title: str = "",
        intro: str = "",
        role: str = Role.agent,
        capacity: int | None = None,
    ) -> Agent:
        if role not in {r.value for r in Role}:
            raise NameplateError(ErrorCode.invalid, f"role must be one of {', '.join(r.value for r in Role)}")
        email = email.strip().lower()
        if "@" not in email or len(email) > 254:
            raise NameplateError(ErrorCode.invalid, "a valid e-mail address is required")
        agent = Agent(
            site_id=site_id,
            given_name=clean_name(given_name, "given name"),
            family_name=clean_name(family_name, "family name"),
            email=email,
            password_hash=hash_password(password),
            title=" ".join(title.split())[:120],
            intro=" ".join(intro.split())[:280],
            role=role,
            capacity=capacity if capacity is not None else self._default_capacity,
        )
        async with self._sessions() as session:
            session.add(agent)
            try:
                await session.commit()
            except IntegrityError as exc:
                raise NameplateError(ErrorCode.exists, "an agent with that e-mail already exists", 409) from exc
        return agent

    async def agent(self, agent_id: str) -> Agent | None:
        async with self._sessions() as session:
            agent = await session.get(Agent, agent_id)
        if agent is not None:
            # A fresh read (every console socket starts with one): the card on each of their messages
            # need not be fetched again. Otherwise the first messages of agents who connected together
            # would each wait for a card query, all at once.
            self._cards.put(agent_id, agent_card(agent))
        return agent

    async def agent_by_email(self, site_id: str | None, email: str) -> Agent | None:
        query = select(Agent).where(col(Agent.email) == email.strip().lower())
        if site_id is not None:
            query = query.where(col(Agent.site_id) == site_id)
        async with self._sessions() as session:
            return (await session.execute(query.limit(1))).scalar_one_or_none()

    async def active_agents_with_email(self, email: str) -> list[Agent]:
        """Every active account with this e-mail, across sites (one person may work for two shops)."""
        async with self._sessions() as session:
            result = await session.execute(
                select(Agent).where(col(Agent.email) == email.strip().lower(), col(Agent.active).is_(True))
            )
            return list(result.scalars())

    async def agents(self, site_id: str) -> list[Agent]:
        async with self._sessions() as session:
            result = await session.execute(
                select(Agent)
                .where(col(Agent.site_id) == site_id)
                .order_by(col(Agent.given_name), col(Agent.family_name))
            )
            return list(result.scalars())

    async def card(self, agent_id: str) -> dict[str, Any]:
        return await self._cards.get(agent_id)

    async def _load_card(self, agent_id: str) -> dict[str, Any]:
        agent = await self.agent(agent_id)
        if agent is None:
            raise NotFound("no such agent")
        return agent_card(agent)

    def forget_card(self, agent_id: str) -> None:
        self._cards.forget(agent_id)

    # -- teams ---------------------------------------------------------------------------------------
    async def create_team(self, site_id: str, name: str) -> Team:
        team = Team(site_id=site_id, name=clean_name(name, "team name"))
        async with self._sessions() as session:
            session.add(team)
            await session.commit()
        return team

    async def teams(self, site_id: str) -> list[Team]:
        async with self._sessions() as session:
            result = await session.execute(select(Team).where(col(Team.site_id) == site_id).order_by(col(Team.name)))
            return list(result.scalars())

    async def agent_teams(self, agent_id: str) -> frozenset[str]:
        async with self._sessions() as session:
            result = await session.execute(select(col(AgentTeam.team_id)).where(col(AgentTeam.agent_id) == agent_id))
            return frozenset(result.scalars())

    async def join_team(self, agent_id: str, team_id: str) -> None:
        async with self._sessions() as session:
            session.add(AgentTeam(agent_id=agent_id, team_id=team_id))
            await session.commit()

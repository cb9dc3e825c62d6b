"""Managing a site's teams: create, rename, and choose who is in each.

Membership decides routing (a chat for Sales goes to someone in Sales), and the broker holds each online
agent's teams: when membership changes, an online agent's routing entry is written again at once, so the
next chat follows the new teams without waiting for the agent to change status.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from nameplate.broker.base import Broker
from nameplate.errors import NameplateError, NotFound
from nameplate.people.directory import Directory, clean_name
from nameplate.protocol.vocabulary import ErrorCode
from nameplate.routing.router import Router
from nameplate.store.engine import Sessions
from nameplate.store.models import Agent, AgentTeam, Team

# A site has a handful of teams; this only bounds what one form can create.
MAX_TEAMS = 100


@dataclass(frozen=True)
class TeamWithMembers:
    team: Team
    members: list[Agent]

    @property
    def member_ids(self) -> set[str]:
        return {agent.id for agent in self.members}


class Teams:
    def __init__(self, sessions: Sessions, broker: Broker, directory: Directory, router: Router) -> None:
        self._sessions = sessions
        self._broker = broker
        self._directory = directory
        self._router = router

    async def roster(self, site_id: str) -> list[TeamWithMembers]:
        """Every team of the site by name, each with its members by name."""
        teams = await self._directory.teams(site_id)
        async with self._sessions() as session:
            result = await session.execute(
                select(col(AgentTeam.team_id), Agent)
                .join(Agent, col(Agent.id) == col(AgentTeam.agent_id))
                .where(col(Agent.site_id) == site_id)
                .order_by(col(Agent.given_name), col(Agent.family_name))
            )
            members: dict[str, list[Agent]] = {}
            for team_id, agent in result:
                members.setdefault(team_id, []).append(agent)
        return [TeamWithMembers(team, members.get(team.id, [])) for team in teams]

    async def get(self, site_id: str, team_id: str) -> Team:
        async with self._sessions() as session:
            team = await session.get(Team, team_id[:64])
        if team is None or team.site_id != site_id:
            raise NotFound("no such team")
        return team

    async def create(self, site_id: str, name: str) -> Team:
        cleaned = clean_name(name, "team name")
        if len(await self._directory.teams(site_id)) >= MAX_TEAMS:
            raise NameplateError(ErrorCode.invalid, f"a site can have at most {MAX_TEAMS} teams")
        await self._refuse_taken(site_id, cleaned, None)
        try:
            return await self._directory.create_team(site_id, cleaned)
        except IntegrityError as exc:  # created by someone else in the meantime
            raise NameplateError(ErrorCode.exists, f"there is already a team called {cleaned}", 409) from exc

    async def rename(self, site_id: str, team_id: str, name: str) -> Team:
        cleaned = clean_name(name, "team name")
        await self.get(site_id, team_id)
        await self._refuse_taken(site_id, cleaned, team_id)
        async with self._sessions() as session:
            team = await session.get(Team, team_id)
            assert team is not None
            team.name = cleaned
            try:
                await session.commit()
            except IntegrityError as exc:
                raise NameplateError(ErrorCode.exists, f"there is already a team called {cleaned}", 409) from exc
            await session.refresh(team)
        return team

    async def set_members(self, site_id: str, team_id: str, agent_ids: set[str]) -> TeamWithMembers:
        """Make exactly `agent_ids` the team's members; every id must be one of the site's agents."""
        team = await self.get(site_id, team_id)
        site_agents = {agent.id: agent for agent in await self._directory.agents(site_id)}
        unknown = agent_ids - site_agents.keys()
        if unknown:
            raise NameplateError(ErrorCode.invalid, "only this site's agents can be members of its teams")
        async with self._sessions() as session:
            result = await session.execute(select(col(AgentTeam.agent_id)).where(col(AgentTeam.team_id) == team_id))
            before = set(result.scalars())
            await session.execute(delete(AgentTeam).where(col(AgentTeam.team_id) == team_id))
            for agent_id in sorted(agent_ids):
                session.add(AgentTeam(agent_id=agent_id, team_id=team_id))
            await session.commit()
        await self._reroute(site_id, [site_agents[a] for a in before ^ agent_ids])
        members = sorted((site_agents[a] for a in agent_ids), key=lambda a: (a.given_name, a.family_name))
        return TeamWithMembers(team, members)

    async def _refuse_taken(self, site_id: str, name: str, team_id: str | None) -> None:
        for team in await self._directory.teams(site_id):
            if team.name.lower() == name.lower() and team.id != team_id:
                raise NameplateError(ErrorCode.exists, f"there is already a team called {team.name}", 409)

    async def _reroute(self, site_id: str, changed: list[Agent]) -> None:
        """Online agents whose teams changed: routing learns their new teams now (same status, same load)."""
        if not changed:
            return
        states = {state.agent_id: state for state in await self._broker.routing.agents(site_id)}
        for agent in changed:
            state = states.get(agent.id)
            if state is not None and state.status != "offline":
                await self._router.set_status(agent, state.status)

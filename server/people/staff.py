"""Managing a site's agents: create, deactivate, reactivate, reset passwords.

Ending access is immediate everywhere: `session_version` is bumped in the store (every older session
cookie stops working on its next request, in every process) and `session_ended` goes out on the agent's
broker channel (every open console socket, in every process, closes with 4401 at once).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import update
from sqlmodel import col

from nameplate.broker.base import Broker
from nameplate.errors import NameplateError, NotFound
from nameplate.people.credentials import MIN_PASSWORD_LENGTH, hash_password
from nameplate.people.directory import Directory
from nameplate.protocol import channels, outbound
from nameplate.protocol.vocabulary import ErrorCode, Presence
from nameplate.routing.router import Router
from nameplate.store.engine import Sessions, rows_changed
from nameplate.store.models import Agent, Role

# The log-in form reads at most this much of a password; a longer one could never be typed back in.
MAX_PASSWORD_LENGTH = 1024
MAX_CAPACITY = 20


@dataclass(frozen=True)
class NewAgent:
    given_name: str
    family_name: str
    email: str
    password: str
    title: str = ""
    intro: str = ""
    role: str = Role.agent
    capacity: int = 3


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise NameplateError(ErrorCode.invalid, f"passwords need at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise NameplateError(ErrorCode.invalid, f"passwords are limited to {MAX_PASSWORD_LENGTH} characters")
    return password


def check_capacity(capacity: int) -> int:
    if not 1 <= capacity <= MAX_CAPACITY:
        raise NameplateError(ErrorCode.invalid, f"capacity must be between 1 and {MAX_CAPACITY} chats")
    return capacity


class Staff:
    def __init__(self, sessions: Sessions, broker: Broker, directory: Directory, router: Router) -> None:
        self._sessions = sessions
        self._broker = broker
        self._directory = directory
        self._router = router

    async def roster(self, site_id: str) -> list[Agent]:
        """Everyone on the site, active first, then by name."""
        agents = await self._directory.agents(site_id)
        return sorted(agents, key=lambda a: (not a.active, a.given_name.lower(), a.family_name.lower()))

    async def get(self, site_id: str, agent_id: str) -> Agent:
        agent = await self._directory.agent(agent_id[:64])
        if agent is None or agent.site_id != site_id:
            raise NotFound("no such agent")
        return agent

    async def create(self, site_id: str, new: NewAgent) -> Agent:
        check_password(new.password)
        check_capacity(new.capacity)
        return await self._directory.create_agent(
            site_id,
            given_name=new.given_name,
            family_name=new.family_name,
            email=new.email,
            password=new.password,
            title=new.title,
            intro=new.intro,
            role=new.role,
            capacity=new.capacity,
        )

    async def deactivate(self, site_id: str, agent_id: str, by: Agent) -> Agent:
        """Revoke every session and socket at once; their open chats go back to the queue now."""
        if agent_id == by.id:
            raise NameplateError(ErrorCode.invalid, "you cannot deactivate your own account")
        agent = await self._revoke(site_id, agent_id, active=False)
        if any(state.agent_id == agent.id for state in await self._broker.routing.agents(site_id)):
            # Offline in routing before anything else is handed to them, then requeue what they held
            # rather than wait for the grace period meant for page reloads.
            await self._router.set_status(agent, Presence.offline)
            await self._router.agent_gone(site_id, agent.id)
        return agent

    async def reactivate(self, site_id: str, agent_id: str) -> Agent:
        await self.get(site_id, agent_id)
        async with self._sessions() as session:
            await session.execute(
                update(Agent).where(col(Agent.id) == agent_id, col(Agent.site_id) == site_id).values(active=True)
            )
            await session.commit()
        self._directory.forget_card(agent_id)
        return await self.get(site_id, agent_id)

    async def reset_password(self, site_id: str, agent_id: str, password: str) -> Agent:
        """A new password; every session signed in with the old one ends."""
        password_hash = hash_password(check_password(password))
        return await self._revoke(site_id, agent_id, password_hash=password_hash)

    async def _revoke(self, site_id: str, agent_id: str, **values: object) -> Agent:
        await self.get(site_id, agent_id)
        async with self._sessions() as session:
            result = await session.execute(
                update(Agent)
                .where(col(Agent.id) == agent_id, col(Agent.site_id) == site_id)
                .values(session_version=col(Agent.session_version) + 1, **values)
            )
            await session.commit()
        if rows_changed(result) != 1:
            raise NotFound("no such agent")
        self._directory.forget_card(agent_id)
        await self._broker.fanout.publish(channels.agent(agent_id), outbound.session_ended_event())
        return await self.get(site_id, agent_id)

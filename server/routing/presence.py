"""Agent presence: which agents have live sockets, and what happens when the last one has been gone too long.

Each process registers its agents' sockets with the broker and refreshes them on a heartbeat; a process
that dies stops refreshing, so its sockets expire. The same loop asks the broker for agents gone longer
than the grace period (each handed to exactly one process) and requeues their chats.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from nameplate.broker.base import Broker
from nameplate.infra.background import BackgroundTask
from nameplate.routing.router import Router
from nameplate.store.models import Agent

log = logging.getLogger("nameplate.presence")


class Presence:
    def __init__(self, broker: Broker, router: Router, grace: float, interval: float) -> None:
        self._broker = broker
        self._router = router
        self._grace = grace
        self._interval = interval
        # A socket lives three heartbeats without a refresh: one missed beat is not a disconnect.
        self._ttl = max(3 * interval, 1.0)
        self._local: dict[str, tuple[str, str]] = {}
        # The status each locally connected agent chose, so it can be restored if the broker loses it.
        self._statuses: dict[tuple[str, str], tuple[Agent, str]] = {}
        self._background = BackgroundTask(self._run, "presence")

    def start(self) -> None:
        self._background.start()

    async def stop(self) -> None:
        await self._background.stop()

    async def connected(self, site_id: str, agent_id: str, connection_id: str) -> None:
        # No live socket in any process until this one: back from a drop (the router tells their visitors,
        # if a chat was kept for them), or a first log-in (it tells no one).
        returning = await self._broker.presence.live_connection_count(site_id, agent_id) == 0
        self._local[connection_id] = (site_id, agent_id)
        await self._broker.presence.agent_connected(site_id, agent_id, connection_id, self._ttl)
        if returning:
            await self._tell("back", self._router.agent_back(site_id, agent_id))

    async def disconnected(self, connection_id: str) -> None:
        owner = self._local.pop(connection_id, None)
        if owner is not None:
            if owner not in self._local.values():
                self._statuses.pop(owner, None)
            site_id, agent_id = owner
            await self._broker.presence.agent_disconnected(site_id, agent_id, connection_id)
            # Their last socket anywhere: another tab (in any process) still answering is not a drop.
            if await self._broker.presence.live_connection_count(site_id, agent_id) == 0:
                await self._tell("dropped", self._router.agent_dropped(site_id, agent_id, self._grace))

    @staticmethod
    async def _tell(what: str, telling: Awaitable[None]) -> None:
        """Telling visitors of a drop or a return is not the socket's business: a failure there (the store
        going away at shutdown) is logged and must not break the socket's own start or clean-up."""
        try:
            await telling
        except Exception:
            log.exception("telling visitors their agent is %s failed", what)

    async def set_status(self, agent: Agent, status: str) -> None:
        self._statuses[(agent.site_id, agent.id)] = (agent, status)
        await self._router.set_status(agent, status)

    def local_agents(self) -> set[tuple[str, str]]:
        return set(self._local.values())

    async def reregister(self) -> None:
        """After the broker lost its state: announce this process's live sockets and their statuses again."""
        for connection_id, (site_id, agent_id) in list(self._local.items()):
            await self._broker.presence.agent_connected(site_id, agent_id, connection_id, self._ttl)
        for agent, status in list(self._statuses.values()):
            await self._router.set_status(agent, status)

    async def beat(self) -> None:
        connections = [(site, agent, cid) for cid, (site, agent) in self._local.items()]
        if connections:
            await self._broker.presence.refresh_connections(connections, self._ttl)
        for site_id, agent_id in await self._broker.presence.take_gone_agents(self._grace):
            log.info("agent %s is gone; requeueing their chats", agent_id)
            await self._router.agent_gone(site_id, agent_id, self._grace)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("presence heartbeat failed; retrying next beat")

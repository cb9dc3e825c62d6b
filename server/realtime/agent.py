"""/ws/agent: an agent's or supervisor's console socket, authenticated by the console session cookie."""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

from starlette.websockets import WebSocket

from nameplate.actions.conversations import close_conversation, transfer_conversation
from nameplate.actions.messages import send_agent_message
from nameplate.actions.supervision import take_over, whisper
from nameplate.errors import Forbidden, RateLimited
from nameplate.infra.rate_limit import TokenBucket
from nameplate.people.credentials import SESSION_AGENT, SESSION_VERSION
from nameplate.people.directory import agent_card
from nameplate.protocol import channels, outbound
from nameplate.protocol.inbound import (
    AgentHello,
    AgentRead,
    AgentSend,
    AgentTyping,
    Close,
    Note,
    Ping,
    Status,
    TakeOver,
    Transfer,
    Watch,
    Whisper,
    parse_agent_frame,
    parse_agent_hello,
)
from nameplate.protocol.vocabulary import AuditAction, ErrorCode, Presence, Side, UnassignReason, is_staff
from nameplate.realtime.common import FrameLoop, Subscriptions, ask_allowed, receive_hello, refuse
from nameplate.realtime.connection import CLOSE_UNAUTHORIZED, Connection
from nameplate.services import Services
from nameplate.store.models import Agent, Conversation, ConversationStatus

log = logging.getLogger("nameplate.realtime")

# An agent holds a handful of chats at once; this only bounds a console that lives for weeks.
MAX_CACHED_CONVERSATIONS = 500


def same_origin(websocket: WebSocket, public_url: str | None) -> bool:
    origin = websocket.headers.get("origin")
    if origin is None:
        return True
    host = websocket.headers.get("host", "")
    allowed = {f"http://{host}", f"https://{host}"}
    if public_url:
        allowed.add(public_url)
    return origin.rstrip("/") in allowed


async def session_agent(services: Services, session: dict[str, Any]) -> Agent | None:
    """The agent behind a console session, if the session is still valid (active, not revoked)."""
    agent_id = session.get(SESSION_AGENT)
    if not isinstance(agent_id, str):
        return None
    agent = await services.directory.agent(agent_id)
    if agent is None or not agent.active or session.get(SESSION_VERSION) != agent.session_version:
        return None
    return agent


async def agent_endpoint(websocket: WebSocket) -> None:
    services: Services = websocket.app.state.services
    await websocket.accept()
    agent = await session_agent(services, websocket.session)
    if agent is None:
        await refuse(websocket, ErrorCode.unauthorized, "log in to the console first")
        return
    if not same_origin(websocket, services.settings.public_url):
        await refuse(websocket, ErrorCode.origin, "the console socket only serves its own pages")
        return
    hello = await receive_hello(websocket, parse_agent_hello)
    if hello is None:
        return
    connection = Connection(websocket)
    session = AgentSession(services, connection, agent, websocket.client.host if websocket.client else "")
    services.sockets.add(session)
    try:
        await session.start(hello)
        await FrameLoop(websocket, connection).run(parse_agent_frame, session.handle)
    finally:
        services.sockets.discard(session)
        await connection.finish()
        await session.stop()


class AgentSession:
    def __init__(self, services: Services, connection: Connection, agent: Agent, address: str = "") -> None:
        self.services = services
        # Where the console connects from: the audit log records it with what supervisors do here.
        self.address = address
        self.connection = connection
        self.agent = agent
        self.connection_id = secrets.token_hex(8)
        self._subscriptions = Subscriptions(services.broker)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._messages = TokenBucket(30, 10)
        self._chatter = TokenBucket(20, 5)
        # Read receipts write to the store and fan out: a console opening many chats sends a burst.
        self._asks = TokenBucket(60, 10)
        # An observing supervisor watches without being online for routing and writes nothing.
        self.observing = False
        # Ids of conversations this console has seen assigned to its agent: spares a query per message.
        # Only a hint — the message log re-checks the assignment inside the write (NewMessage.assigned_to).
        self._mine_cache: set[str] = set()
        # Conversations this console has been told are its agent's (welcome, `assigned`), until told
        # otherwise (`unassigned`, `closed`): what a re-sync compares with the store.
        self._told_mine: set[str] = set()
        connection.filler = self._stored_after

    async def _stored_after(self, conversation_id: str, after: int) -> list[dict[str, Any]]:
        return await self.services.conversations.history(conversation_id, after, include_private=True)

    @property
    def is_staff(self) -> bool:
        return is_staff(self.agent.role)

    # -- lifecycle -----------------------------------------------------------------------------------
    async def start(self, hello: AgentHello) -> None:
        agent = self.agent
        self.observing = hello.observe and self.is_staff
        await self._subscriptions.add(channels.agent(agent.id), self._on_agent_event)
        await self._subscriptions.add(channels.site(agent.site_id), self.connection.send)
        if not self.observing:
            await self.services.presence.connected(agent.site_id, agent.id, self.connection_id)
        mine = [] if self.observing else await self.services.conversations.for_agent(agent.id)
        for conversation in mine:
            self._mine_cache.add(conversation.id)
            self._told_mine.add(conversation.id)
            # Hold, then subscribe: a live message that arrives meanwhile waits for the replay.
            self.connection.hold(conversation.id, after=hello.resume_after.get(conversation.id, 0))
            await self._watch(conversation.id)
        state = next(
            (a for a in await self.services.broker.routing.agents(agent.site_id) if a.agent_id == agent.id), None
        )
        # Back within the grace period: keep the status they had. Otherwise agents arrive available and
        # supervisors and admins away: opening the desk to read or administer must not route chats to them.
        arriving = hello.status or (Presence.away if self.is_staff else Presence.available)
        status = state.status if state is not None and state.status != Presence.offline else arriving
        queued = await self.services.broker.routing.queue(agent.site_id)
        queued_conversations = [await self.services.conversations.get(e.conversation_id) for e in queued]
        self.connection.send(
            outbound.agent_welcome(
                self.observing,
                {**agent_card(agent), "role": agent.role, "email": agent.email},
                status,
                agent.capacity,
                [await self.services.conversations.summary(c) for c in mine],
                [await self.services.conversations.summary(c) for c in queued_conversations if c],
                [{"id": t.id, "name": t.name} for t in await self.services.directory.teams(agent.site_id)],
                [
                    agent_card(a)
                    for a in await self.services.directory.agents(agent.site_id)
                    if a.active and a.id != agent.id
                ],
            )
        )
        for conversation in mine:
            await self._replay(conversation.id, hello.resume_after.get(conversation.id, 0))
        if self.observing:
            self.connection.send(await self.services.router.board(agent.site_id))
            return
        await self.services.presence.set_status(agent, status)
        # The inbox gets the board too: its transfer dialog shows each colleague's presence and load.
        self.connection.send(await self.services.router.board(agent.site_id))

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self.connection.filler = None  # breaks the session <-> connection cycle: freed without the gc
        await self.services.presence.disconnected(self.connection_id)
        await self._subscriptions.clear()

    async def _watch(self, conversation_id: str) -> None:
        await self._subscriptions.add(channels.conversation(conversation_id), self.connection.send)
        await self._subscriptions.add(channels.staff(conversation_id), self.connection.send)

    async def _replay(self, conversation_id: str, after: int) -> None:
        last = after
        for frame in await self.services.conversations.history(conversation_id, after, include_private=True):
            self.connection.send(frame, replayed=True)
            last = frame["seq"]
        self.connection.release(conversation_id, last)

    async def _take_over(self, conversation_id: str) -> None:
        """A conversation was just assigned to this agent: follow it and send its history."""
        self.connection.hold(conversation_id, after=0)
        try:
            await self._watch(conversation_id)
            await self._replay(conversation_id, 0)
        except Exception:
            log.exception("sending the history of %s failed", conversation_id)
            self.connection.release(conversation_id, 0)

    async def resync(self) -> None:
        """After a broker outage or re-subscribe: what this console may have missed, from the store — the
        messages after the last one it delivered of every conversation it follows, conversations assigned
        to its agent meanwhile, and those closed or moved away."""
        for conversation_id in self.connection.tracked():
            await self.connection.fill(conversation_id)
        if self.observing:
            return
        conversations = self.services.conversations
        mine = {c.id: c for c in await conversations.for_agent(self.agent.id)}
        for conversation_id, conversation in mine.items():
            if conversation_id not in self._told_mine:
                self._on_agent_event(outbound.assigned(await conversations.summary(conversation), None))
        for conversation_id in list(self._told_mine - set(mine)):
            stored = await conversations.get(conversation_id)
            if stored is None:
                continue
            if stored.status == ConversationStatus.closed:
                by = (await self.services.directory.card(stored.agent_id))["name"] if stored.agent_id else ""
                self.connection.send(outbound.closed(conversation_id, by))  # once: the connection dedupes
                self._told_mine.discard(conversation_id)
            else:
                self._on_agent_event(outbound.unassigned(conversation_id, UnassignReason.transferred))

    # -- broker events -------------------------------------------------------------------------------
    def _on_agent_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if self.observing and kind in ("assigned", "unassigned", "status"):
            return  # another tab of theirs takes chats; this one only watches
        if kind == "session_ended":
            self.connection.send(outbound.error(ErrorCode.session_ended, "signed out"))
            self.connection.close(CLOSE_UNAUTHORIZED, "session ended")
            return
        if kind == "unassigned":
            self._mine_cache.discard(event.get("conversation_id", ""))
            self._told_mine.discard(event.get("conversation_id", ""))
        elif kind == "assigned":
            self._told_mine.add(event["conversation"]["id"])
            if len(self._mine_cache) >= MAX_CACHED_CONVERSATIONS:
                self._mine_cache.clear()
            self._mine_cache.add(event["conversation"]["id"])
        self.connection.send(event)
        if kind == "assigned":
            task = asyncio.create_task(self._take_over(event["conversation"]["id"]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # -- client frames -------------------------------------------------------------------------------
    async def _mine(self, conversation_id: str) -> Conversation:
        """A conversation this agent may write into: same site, assigned to them, open."""
        conversation = await self.services.conversations.get_in_site(conversation_id, self.agent.site_id)
        if conversation.agent_id != self.agent.id or conversation.status != ConversationStatus.active:
            self._mine_cache.discard(conversation_id)
            raise Forbidden("this conversation is not assigned to you")
        if len(self._mine_cache) >= MAX_CACHED_CONVERSATIONS:
            self._mine_cache.clear()
        self._mine_cache.add(conversation_id)
        return conversation

    async def _post_as_agent(self, conversation_id: str, body: str, client_id: str | None, private: bool) -> None:
        """The cached assignment stands in for a query per message; the write checks it again."""
        if conversation_id not in self._mine_cache:
            await self._mine(conversation_id)
        try:
            await send_agent_message(
                self.services, self.agent, self.connection, conversation_id, body, client_id, private
            )
        except Forbidden:
            self._mine_cache.discard(conversation_id)
            raise

    async def handle(self, frame: Any) -> None:
        ask_allowed(frame, self._asks)
        services = self.services
        # Watching, whispering and taking over are what an observing (live view) console is for.
        if self.observing and not isinstance(frame, Watch | Whisper | TakeOver | Ping):
            raise Forbidden("this console is observing: open the inbox to take part")
        if isinstance(frame, AgentSend):
            body = services.conversations.clean_body(frame.body)
            if not self._messages.take():
                raise RateLimited("sending too quickly")
            await self._post_as_agent(frame.conversation_id, body, frame.client_id, private=False)
            await services.router.picked_up(frame.conversation_id, self.agent.id)
        elif isinstance(frame, Note):
            body = services.conversations.clean_body(frame.body)
            await self._post_as_agent(frame.conversation_id, body, frame.client_id, private=True)
        elif isinstance(frame, AgentTyping):
            if self._chatter.take():
                conversation = await self._mine(frame.conversation_id)
                await services.router.picked_up(conversation.id, self.agent.id)
                await services.conversations.typing(conversation.id, Side.agent, frame.on, self.agent.given_name)
        elif isinstance(frame, AgentRead):
            conversation = await self._mine(frame.conversation_id)
            # Reading a chat is opening it: a hand-off counts as picked up (`Router.picked_up`).
            await services.router.picked_up(conversation.id, self.agent.id)
            await services.conversations.mark_read(conversation.id, Side.agent, frame.seq)
        elif isinstance(frame, Status):
            await services.presence.set_status(self.agent, frame.status)
        elif isinstance(frame, Close):
            conversation = await self._mine(frame.conversation_id)
            self._mine_cache.discard(conversation.id)
            await close_conversation(services, conversation, self.agent.full_name)
        elif isinstance(frame, Transfer):
            conversation = await self._mine(frame.conversation_id)
            await transfer_conversation(services, conversation, self.agent, frame.to_agent, frame.to_team, frame.note)
        elif isinstance(frame, Watch):
            await self._watch_request(frame)
        elif isinstance(frame, Whisper):
            body = services.conversations.clean_body(frame.body)
            if not self._messages.take():
                raise RateLimited("sending too quickly")
            await whisper(
                services, self.agent, self.connection, frame.conversation_id, body, frame.client_id, self.address
            )
        elif isinstance(frame, TakeOver):
            await take_over(services, self.agent, frame.conversation_id, self.address)
        elif isinstance(frame, Ping):
            self.connection.send(outbound.pong())

    async def _watch_request(self, frame: Watch) -> None:
        conversation = await self.services.conversations.get_in_site(frame.conversation_id, self.agent.site_id)
        if not self.is_staff and conversation.agent_id != self.agent.id:
            raise Forbidden("only supervisors can open other agents' conversations")
        if not frame.on:
            if conversation.agent_id != self.agent.id:
                await self._subscriptions.remove(channels.conversation(conversation.id), self.connection.send)
                await self._subscriptions.remove(channels.staff(conversation.id), self.connection.send)
                self.connection.untrack(conversation.id)
            return
        if conversation.agent_id != self.agent.id:
            await self.services.audit.record(
                self.agent.site_id, self.agent, AuditAction.watched, f"conversation {conversation.id}", "", self.address
            )
        self.connection.send(outbound.watching(await self.services.conversations.summary(conversation)))
        self.connection.hold(conversation.id, after=0)
        await self._watch(conversation.id)
        await self._replay(conversation.id, 0)

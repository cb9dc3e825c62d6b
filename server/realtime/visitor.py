"""/ws/visitor: one website visitor's socket. Thin: frames in, service calls, broker events out."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.websockets import WebSocket

from server import channels
from server.context import Nameplate
from server.customers import display_name
from server.errors import Forbidden, NameplateError
from server.message_log import ConversationClosed, NewMessage
from server.models import AuthorKind, Conversation, ConversationStatus, Customer, Site, iso
from server.protocol import (
    OfflineEmail,
    Page,
    Ping,
    ProtocolError,
    Rate,
    Read,
    SendMessage,
    Typing,
    VisitorHello,
    ack_frame,
    parse_visitor_frame,
    parse_visitor_hello,
)
from server.ratelimit import TokenBucket
from server.realtime.common import FrameLoop, receive_hello, refuse
from server.realtime.connection import Connection


async def visitor_endpoint(websocket: WebSocket) -> None:
    nameplate: Nameplate = websocket.app.state.nameplate
    await websocket.accept()
    text = await receive_hello(websocket)
    if text is None:
        await refuse(websocket, "hello_required", "say hello first")
        return
    try:
        hello = parse_visitor_hello(text)
    except ProtocolError as exc:
        await refuse(websocket, exc.code, exc.message)
        return
    site = await nameplate.directory.site_by_key(hello.site)
    if site is None:
        await refuse(websocket, "unknown_site", "unknown site key")
        return
    if not site.origin_allowed(websocket.headers.get("origin")):
        await refuse(websocket, "origin", "this page's origin may not use this site's chat")
        return
    customer = await nameplate.customers.from_token(site, hello.token)
    if customer is None:
        await refuse(websocket, "bad_token", "visitor token is not valid; ask for a new one")
        return
    connection = Connection(websocket)
    session = VisitorSession(nameplate, connection, site, customer)
    try:
        await session.start(hello)
        await FrameLoop(websocket, connection).run(parse_visitor_frame, session.handle)
    finally:
        await connection.finish()
        await session.stop()


class VisitorSession:
    def __init__(self, nameplate: Nameplate, connection: Connection, site: Site, customer: Customer) -> None:
        self.np = nameplate
        self.connection = connection
        self.site = site
        self.customer = customer
        self.conversation: Conversation | None = None
        self._watching: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        settings = nameplate.settings
        self._messages = TokenBucket(settings.message_burst, settings.message_refill_per_second)
        # Typing and page frames are cheap but fan out: a few a second is all a person produces.
        self._chatter = TokenBucket(10, 3)

    # -- lifecycle -----------------------------------------------------------------------------------
    async def start(self, hello: VisitorHello) -> None:
        await self.np.customers.seen(self.customer.id, hello.locale, hello.timezone)
        await self.np.broker.subscribe(channels.customer(self.customer.id), self._on_customer_event)
        conversation = None
        if hello.conversation_id:
            conversation = await self.np.conversations.get(hello.conversation_id)
            if conversation is not None and conversation.customer_id != self.customer.id:
                conversation = None  # someone else's id: behave as if it did not exist
        if conversation is None:
            conversation = await self.np.conversations.open_for_customer(self.customer.id)
        resume_after = hello.resume_after if hello.conversation_id and conversation else 0
        if conversation is not None and conversation.id != hello.conversation_id:
            resume_after = 0
        self.conversation = conversation
        if conversation is not None:
            await self._subscribe(conversation.id)
            self.connection.hold(conversation.id)
        self.connection.send(await self._welcome())
        if conversation is not None:
            await self._replay(conversation.id, resume_after)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.np.broker.unsubscribe(channels.customer(self.customer.id), self._on_customer_event)
        for conversation_id in self._watching:
            await self.np.broker.unsubscribe(channels.conversation(conversation_id), self._on_event)
        self._watching.clear()

    async def _welcome(self) -> dict[str, Any]:
        conversation = self.conversation
        frame: dict[str, Any] = {
            "type": "welcome",
            "customer": {"id": self.customer.id, "name": self.customer.name, "verified": self.customer.verified},
            "conversation": None,
            "agents_online": await self._agents_online(),
        }
        if conversation is not None:
            agent = await self.np.directory.card(conversation.agent_id) if conversation.agent_id else None
            frame["conversation"] = {
                "id": conversation.id,
                "status": conversation.status,
                "agent": agent,
                "last_seq": conversation.last_seq,
                "agent_read_seq": conversation.agent_read_seq,
                "created_at": iso(conversation.created_at),
            }
        return frame

    async def _agents_online(self) -> int:
        return sum(1 for a in await self.np.broker.agents(self.site.id) if a.status != "offline")

    async def _subscribe(self, conversation_id: str) -> None:
        if conversation_id not in self._watching:
            self._watching.add(conversation_id)
            await self.np.broker.subscribe(channels.conversation(conversation_id), self._on_event)

    async def _replay(self, conversation_id: str, after: int) -> None:
        frames = await self.np.conversations.history(conversation_id, after_seq=after)
        last = after
        for frame in frames:
            self.connection.send(frame, replayed=True)
            last = frame["seq"]
        self.connection.release(conversation_id, last)
        if self.conversation is not None and self.conversation.status == ConversationStatus.queued.value:
            position = await self.np.router.position(self.site.id, conversation_id)
            if position is not None:
                self.connection.send(position)

    # -- broker events -------------------------------------------------------------------------------
    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        current = self.conversation
        if current is not None and event.get("conversation_id") == current.id:
            if kind == "agent_joined":
                current.status = ConversationStatus.active.value
                current.agent_id = event["agent"]["id"]
            elif kind in ("closed",):
                current.status = ConversationStatus.closed.value
            elif kind == "agent_left" or (kind == "transferred" and "to_team" in event):
                current.status = ConversationStatus.queued.value
                current.agent_id = None
        if kind == "typing" and event.get("by") == "visitor":
            return  # a visitor's own typing is not news to them
        self.connection.send(event)

    def _on_customer_event(self, event: dict[str, Any]) -> None:
        if event.get("type") != "conversation":
            return
        conversation_id = event["conversation_id"]
        self.connection.send({"type": "conversation_started", "conversation_id": conversation_id})
        if self.conversation is None or self.conversation.id != conversation_id:
            # Possibly another tab of this visitor started it: follow it here too.
            task = asyncio.create_task(self._follow(conversation_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _follow(self, conversation_id: str) -> None:
        if self.conversation is not None and self.conversation.id == conversation_id:
            return
        conversation = await self.np.conversations.get(conversation_id)
        if conversation is None or conversation.customer_id != self.customer.id:
            return
        self.conversation = conversation
        await self._subscribe(conversation_id)

    # -- client frames -------------------------------------------------------------------------------
    async def handle(self, frame: Any) -> None:
        if isinstance(frame, SendMessage):
            await self._message(frame)
        elif isinstance(frame, Typing):
            if self._chatter.take() and self.conversation is not None:
                await self.np.conversations.typing(
                    self.conversation.id, "visitor", frame.on, display_name(self.customer)
                )
        elif isinstance(frame, Read):
            if self.conversation is not None:
                await self.np.conversations.mark_read(self.conversation, "visitor", frame.seq)
        elif isinstance(frame, Page):
            await self._page(frame)
        elif isinstance(frame, Rate):
            await self._rate(frame)
        elif isinstance(frame, OfflineEmail):
            if self.conversation is None:
                raise NameplateError("no_conversation", "send a message first, then leave your e-mail")
            await self.np.conversations.set_offline_email(self.conversation.id, frame.email)
            self.connection.send({"type": "email_saved", "email": frame.email})
        elif isinstance(frame, Ping):
            self.connection.send({"type": "pong"})

    async def _message(self, frame: SendMessage) -> None:
        body = self.np.conversations.clean_body(frame.body)
        if not self._messages.take():
            raise NameplateError("rate_limited", "you are sending messages too quickly; wait a moment")
        started = False
        conversation = self.conversation
        if conversation is None or conversation.status == ConversationStatus.closed.value:
            conversation, started = await self._new_conversation(frame.team_id), True
        author = self.np.conversations.visitor_author(self.customer)
        try:
            stored = await self.np.conversations.post(
                NewMessage(conversation.id, AuthorKind.visitor.value, body, client_id=frame.client_id), author
            )
        except ConversationClosed:
            # Closed between our last look and the write: the message opens a new conversation.
            conversation, started = await self._new_conversation(frame.team_id), True
            stored = await self.np.conversations.post(
                NewMessage(conversation.id, AuthorKind.visitor.value, body, client_id=frame.client_id), author
            )
        self.connection.send(ack_frame(frame.client_id, stored.seq, conversation.id))
        if started:
            await self.np.router.enqueue(conversation)

    async def _new_conversation(self, team_id: str | None) -> Conversation:
        if team_id is not None:
            teams = {team.id for team in await self.np.directory.teams(self.site.id)}
            if team_id not in teams:
                raise NameplateError("invalid", "no such team")
        conversation = await self.np.conversations.start(self.site.id, self.customer.id, team_id)
        self.conversation = conversation
        await self._subscribe(conversation.id)
        return conversation

    async def _page(self, frame: Page) -> None:
        if not self._chatter.take():
            return
        url, title = frame.url.strip(), " ".join(frame.title.split())
        await self.np.customers.record_page(self.customer.id, url, title)
        conversation = self.conversation
        if conversation is not None and conversation.status != ConversationStatus.closed.value:
            await self.np.conversations.system_line(
                conversation.id, f"{display_name(self.customer)} is now on {title or url} ({url})", private=True
            )
            await self.np.broker.publish(
                channels.staff(conversation.id),
                {"type": "page", "conversation_id": conversation.id, "customer_id": self.customer.id,
                 "url": url, "title": title},
            )

    async def _rate(self, frame: Rate) -> None:
        conversation = self.conversation
        if frame.conversation_id:
            conversation = await self.np.conversations.get(frame.conversation_id)
        if conversation is None or conversation.customer_id != self.customer.id:
            raise Forbidden("you can only rate your own conversations")
        await self.np.conversations.rate(conversation, frame.score, frame.comment)
        self.connection.send({"type": "rated", "conversation_id": conversation.id, "score": frame.score})

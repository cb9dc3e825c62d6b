"""/ws/visitor: one website visitor's socket. Thin: frames in, one action each, broker events out."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.websockets import WebSocket

from nameplate.actions.conversations import choose_wait, leave_offline_email, rate_conversation
from nameplate.actions.customers import identify, record_page_view
from nameplate.actions.messages import send_visitor_message
from nameplate.errors import NameplateError, NotFound, RateLimited
from nameplate.infra.rate_limit import TokenBucket
from nameplate.people.customers import display_name
from nameplate.people.identity import IdentifyRequest
from nameplate.protocol import channels, outbound
from nameplate.protocol.inbound import (
    Choose,
    History,
    Identify,
    IdentifyFields,
    OfflineEmail,
    Page,
    Ping,
    Rate,
    Read,
    SendMessage,
    Typing,
    VisitorHello,
    parse_visitor_frame,
    parse_visitor_hello,
)
from nameplate.protocol.vocabulary import ConversationStatus, ErrorCode, Side
from nameplate.realtime.common import FrameLoop, Subscriptions, receive_hello, refuse, take_origin
from nameplate.realtime.connection import Connection
from nameplate.services import Services
from nameplate.store.models import Conversation, Customer, Site, iso
from nameplate.store.views import ConversationView, CustomerView


async def visitor_endpoint(websocket: WebSocket) -> None:
    services: Services = websocket.app.state.services
    origin = take_origin(websocket)
    await websocket.accept()
    hello = await receive_hello(websocket, parse_visitor_hello)
    if hello is None:
        return
    site = await services.directory.site_by_key(hello.site)
    if site is None:
        await refuse(websocket, ErrorCode.unknown_site, "unknown site key")
        return
    if not site.origin_allowed(origin):
        await refuse(websocket, ErrorCode.origin, "this page's origin may not use this site's chat")
        return
    customer = await services.customers.from_token(site, hello.token)
    if customer is None:
        await refuse(websocket, ErrorCode.bad_token, "visitor token is not valid; ask for a new one")
        return
    connection = Connection(websocket)
    session = VisitorSession(services, connection, site, customer)
    try:
        await session.start(hello)
        del hello, customer  # the session has what it needs; this frame lives as long as the socket
        await FrameLoop(websocket, connection).run(parse_visitor_frame, session.handle)
    finally:
        await connection.finish()
        await session.stop()


class VisitorSession:
    # One per open visitor socket, and most of them sit idle for minutes: no per-instance dict.
    __slots__ = (
        "services",
        "connection",
        "site",
        "customer",
        "conversation",
        "_subscriptions",
        "_tasks",
        "_agents_online_sent",
        "_messages",
        "_chatter",
    )

    def __init__(self, services: Services, connection: Connection, site: Site, customer: Customer) -> None:
        self.services = services
        self.connection = connection
        self.site = site  # one object, cached by the directory, shared by every socket of the site
        self.customer = CustomerView.of(customer)
        self.conversation: ConversationView | None = None
        self._subscriptions = Subscriptions(services.broker)
        self._tasks: set[asyncio.Task[Any]] | None = None  # made when first needed: most sessions never do
        self._agents_online_sent: int | None = None
        settings = services.settings
        self._messages = TokenBucket(settings.message_burst, settings.message_refill_per_second)
        # Typing and page frames are cheap but fan out: a few a second is all a person produces.
        self._chatter = TokenBucket(10, 3)

    # -- lifecycle -----------------------------------------------------------------------------------
    async def start(self, hello: VisitorHello) -> None:
        new_token = None
        if hello.identify is not None:
            try:
                new_token = await self._identify(hello.identify, subscribed=False)
            except NameplateError as exc:
                # Refused identify (e.g. verification required): continue as the anonymous visitor.
                self.connection.send(outbound.error(exc.code, exc.message))
        await self.services.customers.seen(self.customer.id, hello.locale, hello.timezone)
        await self._subscriptions.add(channels.customer(self.customer.id), self._on_customer_event)
        await self._subscriptions.add(channels.visitors(self.site.id), self._on_site_event)
        conversation = None
        if hello.conversation_id:
            conversation = await self.services.conversations.get(hello.conversation_id)
            if conversation is not None and conversation.customer_id != self.customer.id:
                conversation = None  # someone else's id: behave as if it did not exist
        if conversation is None:
            conversation = await self.services.conversations.open_for_customer(self.customer.id)
        resume_after = hello.resume_after if hello.conversation_id and conversation else 0
        if conversation is not None and conversation.id != hello.conversation_id:
            resume_after = 0
        self.conversation = ConversationView.of(conversation) if conversation is not None else None
        if conversation is not None:
            await self._subscribe(conversation.id)
            self.connection.hold(conversation.id)
        welcome = await self._welcome(conversation, new_token)
        self._agents_online_sent = welcome["agents_online"]
        self.connection.send(welcome)
        if conversation is not None:
            await self._replay(conversation.id, resume_after)

    async def stop(self) -> None:
        for task in list(self._tasks or ()):
            task.cancel()
        await self._subscriptions.clear()

    @property
    def site_id(self) -> str:
        return self.site.id

    async def _welcome(self, conversation: Conversation | None, token: str | None) -> dict[str, Any]:
        current = None
        if conversation is not None:
            agent = await self.services.directory.card(conversation.agent_id) if conversation.agent_id else None
            current = {
                "id": conversation.id,
                "status": conversation.status,
                "agent": agent,
                "last_seq": conversation.last_seq,
                "agent_read_seq": conversation.agent_read_seq,
                "created_at": iso(conversation.created_at),
            }
        return outbound.visitor_welcome(
            self._customer_frame(),
            current,
            await self.services.router.agents_online(self.site.id),
            [{"id": t.id, "name": t.name} for t in await self.services.directory.teams(self.site.id)],
            # Only a verified customer sees their earlier conversations: an anonymous token proves
            # nothing about who is at the keyboard beyond this browser.
            await self.services.conversations.earlier(self.customer.id) if self.customer.verified else [],
            token,
        )

    def _customer_frame(self) -> dict[str, Any]:
        return {"id": self.customer.id, "name": self.customer.name, "verified": self.customer.verified}

    async def _identify(self, fields: IdentifyFields, subscribed: bool = True) -> str | None:
        """Apply an identify; returns the new token when the visitor now is another customer record."""
        result = await identify(
            self.services,
            self.site,
            self.customer,
            IdentifyRequest(fields.user_id, fields.user_hash, fields.name, fields.email, fields.attributes),
        )
        previous = self.customer
        self.customer = CustomerView.of(result.customer)
        if result.customer.id != previous.id and subscribed:
            await self._subscriptions.remove(channels.customer(previous.id), self._on_customer_event)
            await self._subscriptions.add(channels.customer(result.customer.id), self._on_customer_event)
            current = self.conversation
            if current is not None and current.customer_id != result.customer.id and not result.verified:
                # A fresh anonymous record: the verified customer's conversation is not theirs to see.
                await self._subscriptions.remove(channels.conversation(current.id), self._on_event)
                self.conversation = None
            elif current is not None:
                current.customer_id = result.customer.id
        return result.new_token

    async def _subscribe(self, conversation_id: str) -> None:
        await self._subscriptions.add(channels.conversation(conversation_id), self._on_event)

    async def _replay(self, conversation_id: str, after: int) -> None:
        frames = await self.services.conversations.history(conversation_id, after_seq=after)
        last = after
        for frame in frames:
            self.connection.send(frame, replayed=True)
            last = frame["seq"]
        self.connection.release(conversation_id, last)
        if self.conversation is not None and self.conversation.status == ConversationStatus.queued:
            position = await self.services.router.position(self.site.id, conversation_id)
            if position is not None:
                self.connection.send(position)
            offer = await self.services.router.offer_for(self.site.id, conversation_id)
            if offer is not None:
                self.connection.send(offer)

    # -- broker events -------------------------------------------------------------------------------
    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        current = self.conversation
        if current is not None and event.get("conversation_id") == current.id:
            if kind == "agent_joined":
                current.status = ConversationStatus.active
                current.agent_id = event["agent"]["id"]
            elif kind in ("closed",):
                current.status = ConversationStatus.closed
            elif kind == "agent_left" or (kind == "transferred" and "to_team" in event):
                current.status = ConversationStatus.queued
                current.agent_id = None
        if kind == "typing" and event.get("by") == "visitor":
            return  # a visitor's own typing is not news to them
        self.connection.send(event)

    def _on_site_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "agents_online" and event.get("count") != self._agents_online_sent:
            self._agents_online_sent = event.get("count")
            self.connection.send(event)

    def _on_customer_event(self, event: dict[str, Any]) -> None:
        if event.get("type") != "conversation":
            return
        conversation_id = event["conversation_id"]
        self.connection.send(outbound.conversation_started(conversation_id))
        if self.conversation is None or self.conversation.id != conversation_id:
            # Possibly another tab of this visitor started it: follow it here too.
            task = asyncio.create_task(self._follow_other_tab(conversation_id))
            if self._tasks is None:
                self._tasks = set()
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _follow_other_tab(self, conversation_id: str) -> None:
        if self.conversation is not None and self.conversation.id == conversation_id:
            return
        conversation = await self.services.conversations.get(conversation_id)
        if conversation is None or conversation.customer_id != self.customer.id:
            return
        self.conversation = ConversationView.of(conversation)
        await self._subscribe(conversation_id)

    # -- client frames -------------------------------------------------------------------------------
    async def follow(self, conversation: Conversation) -> None:
        """A conversation this visitor just opened: listen to it before anything is published in it."""
        self.conversation = ConversationView.of(conversation)
        await self._subscribe(conversation.id)

    async def handle(self, frame: Any) -> None:
        services = self.services
        if isinstance(frame, SendMessage):
            body = services.conversations.clean_body(frame.body)
            if not self._messages.take():
                raise RateLimited("you are sending messages too quickly; wait a moment")
            await send_visitor_message(services, self, self.connection, frame.client_id, body, frame.team_id)
        elif isinstance(frame, Typing):
            if self._chatter.take() and self.conversation is not None:
                await services.conversations.typing(
                    self.conversation.id, Side.visitor, frame.on, display_name(self.customer)
                )
        elif isinstance(frame, Read):
            if self.conversation is not None:
                await services.conversations.mark_read(self.conversation.id, Side.visitor, frame.seq)
        elif isinstance(frame, Page):
            if self._chatter.take():
                await record_page_view(services, self.customer, self.conversation, frame.url, frame.title)
        elif isinstance(frame, Rate):
            conversation: Conversation | ConversationView | None = self.conversation
            if frame.conversation_id:
                conversation = await services.conversations.get(frame.conversation_id)
            rated = await rate_conversation(services, self.customer.id, conversation, frame.score, frame.comment)
            self.connection.send(outbound.rated(rated.id, frame.score))
        elif isinstance(frame, OfflineEmail):
            await leave_offline_email(services, self.conversation, frame.email)
            self.connection.send(outbound.email_saved(frame.email))
        elif isinstance(frame, Identify):
            await self._sign_in(frame)
        elif isinstance(frame, Choose):
            await choose_wait(services, self.conversation, frame.wait)
        elif isinstance(frame, History):
            await self._history(frame.conversation_id)
        elif isinstance(frame, Ping):
            self.connection.send(outbound.pong())

    async def _sign_in(self, frame: Identify) -> None:
        token = await self._identify(frame)
        adopted = None
        if self.conversation is None and self.customer.verified:
            # Signed in on a second device: carry on in the conversation already open elsewhere.
            adopted = await self.services.conversations.open_for_customer(self.customer.id)
            if adopted is not None:
                self.conversation = ConversationView.of(adopted)
                await self._subscribe(adopted.id)
                self.connection.hold(adopted.id)
        earlier = await self.services.conversations.earlier(self.customer.id) if self.customer.verified else None
        conversation_id = self.conversation.id if self.conversation else None
        self.connection.send(outbound.identified(self._customer_frame(), conversation_id, token, earlier))
        if adopted is not None:
            await self._replay(adopted.id, 0)

    async def _history(self, conversation_id: str) -> None:
        conversation = await self.services.conversations.get(conversation_id)
        if not self.customer.verified or conversation is None or conversation.customer_id != self.customer.id:
            raise NotFound("no such conversation")
        messages = await self.services.conversations.history(conversation.id)
        self.connection.send(outbound.history(conversation.id, messages))

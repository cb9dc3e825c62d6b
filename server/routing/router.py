"""The routing service: queue conversations, pair them with agents, hand them over, requeue them.

The pairing rules are in routing_plan (pure); the atomic step is the broker's `assign`; this module
keeps the store in step and tells everyone: the agent (`assigned`), the visitor (`agent_joined`,
`queue`), and the site's live board.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlmodel import col

from nameplate.broker.base import Broker
from nameplate.chat.conversations import Conversations
from nameplate.desk.transcripts import as_utc
from nameplate.errors import NameplateError, NotFound
from nameplate.insight.metrics import Event
from nameplate.integrations.webhooks import Webhooks
from nameplate.people.directory import Directory
from nameplate.protocol import channels, outbound
from nameplate.protocol.vocabulary import ErrorCode, EventKind, Presence, UnassignReason
from nameplate.routing.plan import AgentState, QueueEntry
from nameplate.routing.wait_time import (
    HandleTimes,
    available_count,
    describe_offer_wait,
    describe_seconds,
    describe_wait,
    estimate_waits,
)
from nameplate.store.engine import Sessions
from nameplate.store.models import Agent, Conversation, ConversationStatus, Customer, InsightEvent, utcnow
from nameplate.store.views import ConversationView

log = logging.getLogger("nameplate.routing")

# Queue changes arriving together (a burst of visitors) are published once: a fifth of a second is
# invisible to a person waiting in line and spares a round of frames to everyone per arrival.
QUEUE_COALESCE_SECONDS = 0.2
# Handling times move slowly; recomputing them once a minute is plenty.
HANDLE_TIME_TTL_SECONDS = 60.0
# Closed chats of the last day read for the handle times: the site's 50 newest are among the first 50, and
# this many more leave room for each team's own 50 (wait_time.HandleTimes) on a busy site.
HANDLE_TIME_CHATS = 500
# Work the store already committed but the broker refused (an outage) is retried this often, this long;
# past that, the rebuild after the outage repairs it from the store.
REPAIR_INTERVAL_SECONDS = 0.5
REPAIR_DEADLINE_SECONDS = 60.0
DEFAULT_ABANDON_GRACE_SECONDS = 20.0
# A direct hand-off the colleague's console has not opened in this time goes back to the queue.
PICKUP_SECONDS = 30.0


def _first_name(card: dict[str, Any]) -> str:
    return str(card.get("given_name") or card["name"])


# What a visitor is told while their agent's connection is down. The three lines promise and keep the same
# thing: the drop names the deadline and the consequence, the end of the grace does exactly that, and their
# place in line comes in the `queue` frame (a stored line would go stale as the queue moves).
def dropped_line(card: dict[str, Any], grace_s: float) -> str:
    name = _first_name(card)
    return (
        f"{name}'s connection dropped. If {name} is not back within {describe_seconds(grace_s)}, you will be "
        "back in line for the next person, and we'll tell you your place."
    )


def back_line(card: dict[str, Any]) -> str:
    return f"{_first_name(card)} is back."


def gone_line(card: dict[str, Any], grace_s: float | None) -> str:
    if grace_s is None:
        return f"{card['name']} is no longer available. You are back in line for the next person."
    return (
        f"{_first_name(card)} did not come back within {describe_seconds(grace_s)} and is no longer available. "
        "You are back in line for the next person."
    )


class Router:
    def __init__(
        self,
        sessions: Sessions,
        broker: Broker,
        conversations: Conversations,
        directory: Directory,
        webhooks: Webhooks,
    ) -> None:
        self._webhooks = webhooks
        self._sessions = sessions
        self._broker = broker
        self._conversations = conversations
        self._directory = directory
        self._dirty: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handle_times: dict[str, tuple[float, HandleTimes]] = {}
        # What this process last told each queued conversation, so an unchanged position is not resent.
        self._told: dict[str, dict[str, tuple[int, int | None, int]]] = {}
        # How long a queued visitor may be gone (a reload, a blip) before they count as having given up.
        self.abandon_grace_seconds = DEFAULT_ABANDON_GRACE_SECONDS
        # How long a colleague has to open a chat handed to them before it goes back to the queue.
        self.pickup_seconds = PICKUP_SECONDS
        # This process's pending pick-up checks, by conversation id (a newer hand-off replaces the older).
        self.pickups: dict[str, asyncio.Task[None]] = {}

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def complete_later(self, what: str, attempt: Callable[[], Awaitable[None]]) -> None:
        """The store committed something whose broker half failed (e.g. Redis restarting): retry that half
        in the background until it works, so the operation is not left half-done."""
        self._spawn(self._complete(what, attempt))

    async def _complete(self, what: str, attempt: Callable[[], Awaitable[None]]) -> None:
        deadline = time.monotonic() + REPAIR_DEADLINE_SECONDS
        while True:
            await asyncio.sleep(REPAIR_INTERVAL_SECONDS)
            try:
                await attempt()
                log.info("completed %s after a broker failure", what)
                return
            except Exception as error:
                if time.monotonic() > deadline:
                    log.warning("gave up completing %s (%s); the broker's rebuild repairs it", what, error)
                    return

    async def enqueue_if_queued(self, conversation_id: str) -> None:
        """`enqueue` again for a conversation the store still has queued (a retry after a failure)."""
        conversation = await self._conversations.get(conversation_id)
        if conversation is not None and conversation.status == ConversationStatus.queued:
            await self.enqueue(conversation)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- queue ---------------------------------------------------------------------------------------
    async def enqueue(self, conversation: Conversation, front: bool = False) -> None:
        """Queue a new conversation. A returning customer's previous agent is preferred ("personal
        concierge"); if that agent is on duty but full, the visitor is offered the choice to wait for
        them or take the next available person, and waits for them until they choose."""
        preferred = await self._conversations.previous_agent_id(conversation.customer_id, excluding=conversation.id)
        only_preferred = False
        offer: dict[str, Any] | None = None
        if preferred is not None:
            agents = {a.agent_id: a for a in await self._broker.routing.agents(conversation.site_id)}
            state = agents.get(preferred)
            if state is not None and state.status == Presence.available and not state.has_room:
                only_preferred = True
                offer = await self._offer(conversation.site_id, conversation.id, preferred, state)
        entry = QueueEntry(
            conversation.id,
            conversation.created_at.timestamp(),
            team_id=conversation.team_id,
            preferred_agent_id=preferred,
            only_preferred=only_preferred,
        )
        await self._broker.routing.enqueue(conversation.site_id, entry, front=front)
        if offer is not None:
            await self._broker.fanout.publish(channels.conversation(conversation.id), offer)
        await self.drain(conversation.site_id)

    async def choose(self, conversation: Conversation | ConversationView, wait_for_preferred: bool) -> None:
        """The visitor's answer to an offer: keep waiting for their previous agent, or take anyone."""
        for entry in await self._broker.routing.queue(conversation.site_id):
            if entry.conversation_id != conversation.id:
                continue
            updated = QueueEntry(
                entry.conversation_id,
                entry.score,
                team_id=entry.team_id,
                preferred_agent_id=entry.preferred_agent_id if wait_for_preferred else None,
                only_preferred=wait_for_preferred and entry.preferred_agent_id is not None,
            )
            await self._broker.routing.enqueue(conversation.site_id, updated)
            await self.drain(conversation.site_id)
            return
        raise NameplateError(ErrorCode.not_queued, "this conversation is no longer waiting")

    async def drain(self, site_id: str) -> None:
        """Give every queued conversation that can be served now to an agent."""
        pairs = await self._broker.routing.assign(site_id, time.time())
        for conversation_id, agent_id in pairs:
            conversation = await self._conversations.mark_assigned(conversation_id, agent_id)
            if conversation is None:
                # Closed (or abandoned) while it waited: give the agent their slot back.
                await self._broker.routing.detach(site_id, agent_id, conversation_id)
                continue
            await self._announce_assignment(conversation, agent_id, note=None)
        self.queue_changed(site_id)

    async def _announce_assignment(self, conversation: Conversation, agent_id: str, note: str | None) -> None:
        # The assignment is committed: a broker failure now is logged, and both sides learn of it when
        # their sockets re-sync from the store after the outage (publish_committed).
        card = await self._directory.card(agent_id)
        await self._conversations.publish_committed(
            channels.conversation(conversation.id),
            outbound.agent_joined(conversation.id, card),
        )
        await self._conversations.system_line(conversation.id, f"{card['name']} joined the conversation.")
        summary = await self._conversations.summary(conversation)
        await self._conversations.publish_committed(channels.agent(agent_id), outbound.assigned(summary, note))
        await self._conversations.publish_committed(channels.site(conversation.site_id), outbound.conversation(summary))
        await self._webhooks.emit(
            conversation.site_id, "conversation.transferred" if note is not None else "conversation.assigned", summary
        )

    def queue_changed(self, site_id: str) -> None:
        if site_id in self._dirty:
            return
        self._dirty.add(site_id)
        self._spawn(self._publish_queue_soon(site_id))

    async def _publish_queue_soon(self, site_id: str) -> None:
        await asyncio.sleep(QUEUE_COALESCE_SECONDS)
        self._dirty.discard(site_id)
        try:
            await self.publish_queue(site_id)
        except Exception:
            log.exception("publishing the queue of site %s failed", site_id)

    async def publish_queue(self, site_id: str) -> None:
        """Fresh `queue` frames to every queued visitor, and the board to the site's consoles."""
        queue = await self._broker.routing.queue(site_id)
        agents = await self._broker.routing.agents(site_id)
        online = available_count(agents)
        waits = estimate_waits(queue, agents, await self.handle_times(site_id))
        told = self._told.setdefault(site_id, {})
        now_told: dict[str, tuple[int, int | None, int]] = {}
        updates: list[tuple[str, dict[str, Any]]] = []
        for position, (entry, wait) in enumerate(zip(queue, waits, strict=True), start=1):
            now_told[entry.conversation_id] = (position, wait, online)
            if told.get(entry.conversation_id) == now_told[entry.conversation_id]:
                continue
            frame = outbound.queue(entry.conversation_id, position, wait, describe_wait(wait), online)
            updates.append((channels.conversation(entry.conversation_id), frame))
        self._told[site_id] = now_told
        updates.append((channels.site(site_id), self._board(queue, agents, waits)))
        await self._broker.fanout.publish_many(updates)

    async def offer_for(self, site_id: str, conversation_id: str) -> dict[str, Any] | None:
        """The pending offer to wait for the previous agent, for a visitor who (re)connects meanwhile."""
        for entry in await self._broker.routing.queue(site_id):
            if entry.conversation_id == conversation_id and entry.only_preferred and entry.preferred_agent_id:
                state = next(
                    (a for a in await self._broker.routing.agents(site_id) if a.agent_id == entry.preferred_agent_id),
                    None,
                )
                return await self._offer(site_id, conversation_id, entry.preferred_agent_id, state)
        return None

    async def _offer(
        self, site_id: str, conversation_id: str, agent_id: str, state: AgentState | None
    ) -> dict[str, Any]:
        """About one chat of theirs has to finish first (they run `capacity` at once): the estimate a
        visitor holding out for them gets in the queue too, said in the same words."""
        capacity = state.capacity if state is not None else 1
        seconds = round(await self.handle_seconds(site_id) / max(1, capacity))
        card = await self._directory.card(agent_id)
        return outbound.offer(conversation_id, card, seconds, describe_offer_wait(card["name"], seconds))

    async def board(self, site_id: str) -> dict[str, Any]:
        """The site's live board: the queue with expected waits, and every agent's status and load."""
        queue = await self._broker.routing.queue(site_id)
        agents = await self._broker.routing.agents(site_id)
        return self._board(queue, agents, estimate_waits(queue, agents, await self.handle_times(site_id)))

    @staticmethod
    def _board(queue: list[QueueEntry], agents: list[AgentState], waits: list[int | None]) -> dict[str, Any]:
        return outbound.board(
            [
                {
                    "conversation_id": e.conversation_id,
                    "position": n,
                    "expected_wait_s": wait,
                    "wait_text": describe_wait(wait),
                }
                for n, (e, wait) in enumerate(zip(queue, waits, strict=True), start=1)
            ],
            [{"id": a.agent_id, "status": a.status, "load": a.load, "capacity": a.capacity} for a in agents],
        )

    async def position(self, site_id: str, conversation_id: str) -> dict[str, Any] | None:
        """The `queue` frame for one conversation, or None if it is not queued."""
        queue = await self._broker.routing.queue(site_id)
        for position, entry in enumerate(queue, start=1):
            if entry.conversation_id == conversation_id:
                agents = await self._broker.routing.agents(site_id)
                wait = estimate_waits(queue, agents, await self.handle_times(site_id))[position - 1]
                return outbound.queue(conversation_id, position, wait, describe_wait(wait), available_count(agents))
        return None

    async def handle_seconds(self, site_id: str, team_id: str | None = None) -> float:
        """The mean handle time of the team's (or, with too few, the site's) chats closed in the last day."""
        return (await self.handle_times(site_id)).of(team_id)

    async def handle_times(self, site_id: str) -> HandleTimes:
        """The site's and its teams' mean handle times over chats closed in the last day, from the event
        record: a chat's handle time is the sum of every agent's part, so a transfer neither resets nor splits
        it (a chat holds a slot from its first assignment to its close, whoever holds it)."""
        cached = self._handle_times.get(site_id)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        async with self._sessions() as session:
            recent = (
                select(col(InsightEvent.conversation_id))
                .where(
                    col(InsightEvent.site_id) == site_id,
                    col(InsightEvent.kind) == EventKind.closed,
                    col(InsightEvent.at) > utcnow() - timedelta(days=1),
                )
                .order_by(col(InsightEvent.at).desc())
                .limit(HANDLE_TIME_CHATS)
            )
            rows = await session.execute(
                select(InsightEvent)
                .where(col(InsightEvent.conversation_id).in_(recent.scalar_subquery()))
                .order_by(col(InsightEvent.conversation_id), col(InsightEvent.id))
            )
            events = [Event.of(row) for row in rows.scalars()]
        value = HandleTimes.of_events(events)
        self._handle_times[site_id] = (time.monotonic() + HANDLE_TIME_TTL_SECONDS, value)
        return value

    # -- agents --------------------------------------------------------------------------------------
    async def set_status(self, agent: Agent, status: str) -> None:
        teams = await self._directory.agent_teams(agent.id)
        await self._broker.routing.set_agent_status(agent.site_id, agent.id, status, agent.capacity, teams)
        await self.publish_load(agent.site_id, agent.id)
        await self.publish_availability(agent.site_id)
        if status == Presence.available:
            await self.drain(agent.site_id)
        else:
            self.queue_changed(agent.site_id)

    async def agents_online(self, site_id: str) -> int:
        return available_count(await self._broker.routing.agents(site_id))

    async def publish_availability(self, site_id: str) -> None:
        """Tell the site's visitors how many agents are online, so "no one is online" never goes stale."""
        online = await self.agents_online(site_id)
        await self._broker.fanout.publish(channels.visitors(site_id), outbound.agents_online(online))

    async def publish_load(self, site_id: str, agent_id: str) -> None:
        for state in await self._broker.routing.agents(site_id):
            if state.agent_id == agent_id:
                await self._broker.fanout.publish(
                    channels.agent(agent_id),
                    outbound.status(state.status, state.load, state.capacity),
                )

    async def agent_dropped(self, site_id: str, agent_id: str, grace_s: float) -> None:
        """The agent's last console socket closed (a reload, a network blip, a closed laptop). Their chats
        stay theirs for the grace period; each visitor is told now, not when it runs out, what happened and
        what happens next, so nobody reads "Jane is here to help" while Jane cannot answer."""
        state = next((a for a in await self._broker.routing.agents(site_id) if a.agent_id == agent_id), None)
        if state is None or state.status == Presence.offline:
            return  # deactivated, or already requeued: the visitor has been told that instead
        chats = await self._conversations.for_agent(agent_id)
        if not chats:
            return
        card = await self._directory.card(agent_id)
        text = dropped_line(card, grace_s)
        for conversation in chats:
            await self._conversations.publish_committed(
                channels.conversation(conversation.id),
                outbound.agent_dropped(conversation.id, card, round(grace_s), text),
            )
            await self._conversations.system_line(conversation.id, text)

    async def agent_back(self, site_id: str, agent_id: str) -> None:
        """An agent whose last socket had closed has one again within the grace period: the visitors told of
        the drop hear that the chat goes on with the same person."""
        state = next((a for a in await self._broker.routing.agents(site_id) if a.agent_id == agent_id), None)
        if state is None or state.status == Presence.offline:
            return  # a first log-in, or back after the grace ran out: no chat was waiting for them
        chats = await self._conversations.for_agent(agent_id)
        if not chats:
            return
        card = await self._directory.card(agent_id)
        text = back_line(card)
        for conversation in chats:
            await self._conversations.publish_committed(
                channels.conversation(conversation.id), outbound.agent_back(conversation.id, card, text)
            )
            await self._conversations.system_line(conversation.id, text)

    async def agent_gone(self, site_id: str, agent_id: str, grace_s: float | None = None) -> None:
        """The agent's grace period (`grace_s`) ran out, or they were deactivated (None): their chats go
        back to the front of the queue."""
        card = await self._directory.card(agent_id)
        for conversation in await self._conversations.for_agent(agent_id):
            if not await self._conversations.mark_requeued(conversation.id):
                continue
            await self._broker.routing.detach(site_id, agent_id, conversation.id)
            await self._broker.routing.enqueue(
                site_id,
                QueueEntry(conversation.id, conversation.created_at.timestamp(), team_id=conversation.team_id),
                front=True,
            )
            await self._conversations.publish_committed(
                channels.conversation(conversation.id),
                outbound.agent_left(conversation.id, card),
            )
            await self._conversations.system_line(conversation.id, gone_line(card, grace_s))
            await self._conversations.publish_committed(
                channels.agent(agent_id),
                outbound.unassigned(conversation.id, UnassignReason.offline),
            )
            requeued = await self._conversations.get(conversation.id)
            if requeued is not None:
                await self._conversations.announce(requeued)
        await self.publish_availability(site_id)
        await self.drain(site_id)

    # -- visitors leaving ----------------------------------------------------------------------------
    def visitor_left(self, conversation: Conversation | ConversationView, customer_id: str) -> None:
        """A visitor's socket closed while their conversation was queued. After a grace period (a reload or
        a blip reconnects well within it) the conversation is abandoned unless the visitor came back."""
        self._spawn(self._abandon_later(conversation.site_id, conversation.id, customer_id, utcnow()))

    async def _abandon_later(self, site_id: str, conversation_id: str, customer_id: str, left_at: Any) -> None:
        await asyncio.sleep(self.abandon_grace_seconds)
        try:
            async with self._sessions() as session:
                customer = await session.get(Customer, customer_id)
            # Every visitor socket marks the customer seen when it starts, in any process: a later mark
            # means they are back (on this page or another), and still waiting.
            if customer is None or as_utc(customer.last_seen_at) > left_at:
                return
            abandoned = await self._conversations.abandon(conversation_id, customer.current_url, left_at)
            if abandoned is None:
                return
            await self._broker.routing.dequeue(site_id, conversation_id)
            await self._broker.fanout.publish(
                channels.conversation(conversation_id),
                outbound.closed(conversation_id, "nobody: the visitor left"),
            )
            await self._conversations.announce(abandoned)
            self.queue_changed(site_id)
        except Exception:
            log.exception("abandoning conversation %s failed", conversation_id)

    async def release(self, conversation: Conversation) -> None:
        """The agent's slot is free again (closed conversation): give it to whoever waits."""
        if conversation.agent_id:
            await self._broker.routing.detach(conversation.site_id, conversation.agent_id, conversation.id)
            await self.publish_load(conversation.site_id, conversation.agent_id)
        else:
            await self._broker.routing.dequeue(conversation.site_id, conversation.id)
        await self.drain(conversation.site_id)

    async def transfer(
        self,
        conversation: Conversation,
        from_agent: Agent,
        to_agent_id: str | None,
        to_team_id: str | None,
        note: str,
    ) -> None:
        """Hand a chat to one colleague (who must be there and have room) or to a team (queued, first in line)."""
        if bool(to_agent_id) == bool(to_team_id):
            raise NameplateError(ErrorCode.invalid, "transfer to exactly one of to_agent or to_team")
        note = note.strip()[:2000]
        if to_agent_id:
            await self._transfer_to_agent(conversation, from_agent, to_agent_id, note)
        else:
            await self._transfer_to_team(conversation, from_agent, to_team_id or "", note)

    async def _transfer_to_agent(
        self, conversation: Conversation, from_agent: Agent, to_agent_id: str, note: str
    ) -> None:
        from_name = from_agent.full_name
        target = await self._directory.agent(to_agent_id)
        if target is None or target.site_id != conversation.site_id or not target.active:
            raise NotFound("no such colleague")
        if target.id == from_agent.id:
            raise NameplateError(ErrorCode.invalid, "this conversation is already yours")
        await self._check_can_take(conversation.site_id, target)
        if not await self._conversations.hand_over(conversation.id, from_agent.id, target.id):
            raise NameplateError(ErrorCode.conflict, "the conversation changed hands meanwhile", 409)
        await self._broker.routing.detach(conversation.site_id, from_agent.id, conversation.id)
        await self._broker.routing.attach(conversation.site_id, target.id, conversation.id)
        if note:
            await self._conversations.system_line(
                conversation.id, f"Hand-off note from {from_name}: {note}", private=True
            )
        await self._conversations.publish_committed(
            channels.conversation(conversation.id),
            outbound.transferred_to_agent(conversation.id, from_name, target.full_name),
        )
        await self._conversations.publish_committed(
            channels.agent(from_agent.id),
            outbound.unassigned(conversation.id, UnassignReason.transferred),
        )
        moved = await self._conversations.get(conversation.id)
        assert moved is not None
        await self._announce_assignment(moved, target.id, note=note or None)
        await self.publish_load(conversation.site_id, from_agent.id)
        await self.publish_load(conversation.site_id, target.id)
        self._watch_pickup(conversation.site_id, conversation.id, target.id)

    async def _transfer_to_team(
        self, conversation: Conversation, from_agent: Agent, to_team_id: str, note: str
    ) -> None:
        from_name = from_agent.full_name
        teams = {team.id: team for team in await self._directory.teams(conversation.site_id)}
        team = teams.get(to_team_id)
        if team is None:
            raise NotFound("no such team")
        if not await self._conversations.mark_requeued(conversation.id, team_id=team.id, transferred_by=from_agent.id):
            raise NameplateError(ErrorCode.conflict, "the conversation changed hands meanwhile", 409)
        await self._broker.routing.detach(conversation.site_id, from_agent.id, conversation.id)
        requeued = await self._conversations.get(conversation.id)
        if requeued is not None:
            await self._conversations.announce(requeued)
        if note:
            await self._conversations.system_line(
                conversation.id, f"Hand-off note from {from_name} to {team.name}: {note}", private=True
            )
        await self._conversations.system_line(
            conversation.id, f"{from_name} is transferring you to {team.name}. You are first in line."
        )
        await self._conversations.publish_committed(
            channels.conversation(conversation.id),
            outbound.transferred_to_team(conversation.id, from_name, team.name),
        )
        await self._conversations.publish_committed(
            channels.agent(from_agent.id),
            outbound.unassigned(conversation.id, UnassignReason.transferred),
        )
        await self._broker.routing.enqueue(
            conversation.site_id,
            QueueEntry(conversation.id, conversation.created_at.timestamp(), team_id=team.id),
            front=True,
        )
        await self.publish_load(conversation.site_id, from_agent.id)
        await self.drain(conversation.site_id)

    # -- safe hand-offs ------------------------------------------------------------------------------
    async def _check_can_take(self, site_id: str, target: Agent) -> None:
        """A chat is handed only to someone who is there and has room: available, below capacity."""
        state = next((a for a in await self._broker.routing.agents(site_id) if a.agent_id == target.id), None)
        status = state.status if state is not None else Presence.offline
        if status != Presence.available:
            why = "offline" if status == Presence.offline else "away"
            raise NameplateError(
                ErrorCode.colleague_unavailable,
                f"{target.full_name} is {why}; choose someone available or a team (it queues for them)",
                409,
            )
        assert state is not None
        if not state.has_room:
            raise NameplateError(
                ErrorCode.colleague_unavailable,
                f"{target.full_name} is full ({state.load} of {state.capacity} chats); choose someone else or a team",
                409,
            )

    @staticmethod
    def _pickup_key(conversation_id: str, agent_id: str) -> str:
        return f"pickup:{conversation_id}:{agent_id}"

    async def picked_up(self, conversation_id: str, agent_id: str) -> None:
        """The agent's console opened (read, typed in, wrote in) a conversation handed to them. Kept in the
        broker's counters, so the process that made the transfer sees it wherever the console is."""
        await self._broker.counters.hit(self._pickup_key(conversation_id, agent_id), 1 << 30, 4 * self.pickup_seconds)

    def _watch_pickup(self, site_id: str, conversation_id: str, agent_id: str) -> None:
        earlier = self.pickups.pop(conversation_id, None)
        if earlier is not None:
            earlier.cancel()
        task = asyncio.create_task(self._expect_pickup(site_id, conversation_id, agent_id))
        self.pickups[conversation_id] = task
        self._tasks.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._tasks.discard(finished)
            if self.pickups.get(conversation_id) is finished:
                del self.pickups[conversation_id]

        task.add_done_callback(done)

    async def _expect_pickup(self, site_id: str, conversation_id: str, agent_id: str) -> None:
        """A hand-off not opened within `pickup_seconds` goes back to the front of the queue, the visitor told."""
        try:
            await asyncio.sleep(self.pickup_seconds)
            unopened, _ = await self._broker.counters.hit(
                self._pickup_key(conversation_id, agent_id), 0, 4 * self.pickup_seconds, cost=0
            )
            conversation = await self._conversations.get(conversation_id)
            if not unopened or conversation is None or conversation.agent_id != agent_id:
                return
            if not await self._conversations.mark_requeued(conversation_id):
                return
            card = await self._directory.card(agent_id)
            await self._broker.routing.detach(site_id, agent_id, conversation_id)
            await self._broker.routing.enqueue(
                site_id,
                QueueEntry(conversation_id, conversation.created_at.timestamp(), team_id=conversation.team_id),
                front=True,
            )
            await self._broker.fanout.publish(
                channels.conversation(conversation_id), outbound.agent_left(conversation_id, card)
            )
            await self._conversations.system_line(
                conversation_id,
                f"{card['name']} could not pick up your chat. You are first in line for the next person.",
            )
            await self._broker.fanout.publish(
                channels.agent(agent_id), outbound.unassigned(conversation_id, UnassignReason.not_picked_up)
            )
            requeued = await self._conversations.get(conversation_id)
            if requeued is not None:
                await self._conversations.announce(requeued)
            # Not at their desk: set them Away, so the chat (and the next) does not go straight back to them.
            agent = await self._directory.agent(agent_id)
            if agent is not None:
                await self.set_status(agent, Presence.away)
            await self.drain(site_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("checking that %s was picked up failed", conversation_id)

    # -- take-over (supervisors) ---------------------------------------------------------------------
    async def take_over(self, conversation: Conversation, supervisor: Agent) -> str:
        """The supervisor becomes the conversation's agent: the store and the routing state move from the
        old agent to them, the visitor gets their card, the old agent `unassigned {reason: taken_over}`.
        Returns the old agent's id."""
        previous = conversation.agent_id
        if conversation.status != ConversationStatus.active or previous is None:
            raise NameplateError(ErrorCode.conflict, "only a chat someone is answering can be taken over", 409)
        if previous == supervisor.id:
            raise NameplateError(ErrorCode.invalid, "this conversation is already yours")
        if not await self._conversations.hand_over(conversation.id, previous, supervisor.id):
            raise NameplateError(ErrorCode.conflict, "the conversation changed hands meanwhile", 409)
        await self._broker.routing.detach(conversation.site_id, previous, conversation.id)
        await self._broker.routing.attach(conversation.site_id, supervisor.id, conversation.id)
        await self._broker.fanout.publish(
            channels.agent(previous), outbound.unassigned(conversation.id, UnassignReason.taken_over)
        )
        moved = await self._conversations.get(conversation.id)
        assert moved is not None
        await self._announce_assignment(moved, supervisor.id, note=None)
        await self.publish_load(conversation.site_id, previous)
        await self.publish_load(conversation.site_id, supervisor.id)
        # The old agent's slot is free: whoever waits may get it.
        await self.drain(conversation.site_id)
        return previous

    # -- recovery ------------------------------------------------------------------------------------
    async def rebuild(self) -> None:
        """After the broker lost its state: queue and agent loads again, from the store (the truth)."""
        open_conversations = await self._conversations.with_status(ConversationStatus.queued)
        active = await self._conversations.with_status(ConversationStatus.active)
        sites = {c.site_id for c in open_conversations} | {c.site_id for c in active}
        for site_id in sites:
            queue = [
                QueueEntry(c.id, c.created_at.timestamp(), team_id=c.team_id)
                for c in open_conversations
                if c.site_id == site_id
            ]
            # Every agent of the site is named, so one who holds nothing now is cleared of stale chats.
            by_agent: dict[str, set[str]] = {a.id: set() for a in await self._directory.agents(site_id)}
            for c in active:
                if c.site_id == site_id and c.agent_id:
                    by_agent.setdefault(c.agent_id, set()).add(c.id)
            await self._broker.routing.replace_site_state(site_id, queue, by_agent)
        log.info("routing state rebuilt from the store for %d site(s)", len(sites))

    async def drain_all(self) -> None:
        async with self._sessions() as session:
            site_ids = set(
                (
                    await session.execute(
                        select(col(Conversation.site_id)).where(col(Conversation.status) == ConversationStatus.queued)
                    )
                ).scalars()
            )
        for site_id in site_ids:
            await self.drain(site_id)
            self.queue_changed(site_id)

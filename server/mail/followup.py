"""The follow-up flows: what makes a mail, and the mail it makes.

- an agent's reply by e-mail (offline messages: the visitor left an address and went away);
- agent replies the widget did not show as read within a short delay, batched into one mail;
- a transcript, asked for in the widget or sent from the console;
- a one-question rating mail for a chat closed without a rating (the link opens a form; only a POST records).

The scheduled ones (unread, rating) are found by a sweep that every process runs before its sender pass;
their Message-IDs are derived from what they cover, and the column is unique, so two processes sweeping at
once store one mail: the unique key is the lease.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from nameplate.chat.conversations import Conversations
from nameplate.errors import NameplateError, NotFound
from nameplate.mail.compose import Line, Sender, compose
from nameplate.mail.outbox import Outbox
from nameplate.mail.site_settings import SiteMailSettings, clean_address
from nameplate.mail.tokens import BadToken, ReplyTokens
from nameplate.people.directory import Directory
from nameplate.protocol.vocabulary import ErrorCode
from nameplate.store.engine import Sessions
from nameplate.store.message_log.log import NewMessage, StoredMessage
from nameplate.store.models import (
    Agent,
    AuthorKind,
    Conversation,
    ConversationStatus,
    Customer,
    Message,
    OutboxMail,
    Rating,
    Site,
    utcnow,
)

log = logging.getLogger("nameplate.mail")

# A visitor may ask for the transcript of one conversation this many times (it is mail sent on their word).
MAX_TRANSCRIPTS_PER_CONVERSATION = 3
# Rating mails only for chats closed within this window: turning mail on does not mail a year of old chats.
RATING_WINDOW = timedelta(days=2)
UNREAD_WINDOW = timedelta(days=7)
SWEEP_BATCH = 50
SWEEP_INTERVAL_SECONDS = 5.0


def _derived_id(kind: str, key: str) -> str:
    return f"{kind}-" + hashlib.sha256(f"{kind}:{key}".encode()).hexdigest()[:24]


class FollowUps:
    def __init__(
        self,
        sessions: Sessions,
        outbox: Outbox,
        tokens: ReplyTokens,
        site_settings: SiteMailSettings,
        conversations: Conversations,
        directory: Directory,
        public_url: str | None,
        unread_delay_seconds: float,
        rating_delay_seconds: float,
    ) -> None:
        self._sessions = sessions
        self._outbox = outbox
        self._tokens = tokens
        self._site_settings = site_settings
        self._conversations = conversations
        self._directory = directory
        self._public_url = public_url
        self.unread_delay_seconds = unread_delay_seconds
        self.rating_delay_seconds = rating_delay_seconds
        self._last_sweep = 0.0

    # -- shared pieces -------------------------------------------------------------------------------
    async def _context(self, conversation_id: str) -> tuple[Conversation, Customer, Site, Sender]:
        async with self._sessions() as session:
            conversation = await session.get(Conversation, conversation_id)
            customer = await session.get(Customer, conversation.customer_id) if conversation else None
            site = await session.get(Site, conversation.site_id) if conversation else None
        if conversation is None or customer is None or site is None:
            raise NotFound("no such conversation")
        return conversation, customer, site, await self._site_settings.sender(site)

    @staticmethod
    def recipient(conversation: Conversation, customer: Customer) -> str | None:
        return conversation.offline_email or customer.email

    def link(self, path: str) -> str | None:
        return f"{self._public_url}{path}" if self._public_url else None

    async def _lines(self, conversation_id: str, after_seq: int = 0, agent_only: bool = False) -> list[Line]:
        frames = await self._conversations.history(conversation_id, after_seq=after_seq)
        lines = []
        for frame in frames:
            author = frame["author"]
            if agent_only and author.get("kind") != AuthorKind.agent.value:
                continue
            when = frame["sent_at"]
            moment = datetime.fromisoformat(when.replace("Z", "+00:00"))
            lines.append(Line(author.get("name") or "Nameplate", frame["body"], moment))
        return lines

    async def _agent(self, agent_id: str | None) -> Agent | None:
        return await self._directory.agent(agent_id) if agent_id else None

    def _mail(
        self,
        sender: Sender,
        conversation: Conversation,
        customer: Customer,
        to_address: str,
        kind: str,
        subject: str,
        agent: Agent | None,
        intro: str,
        lines: Sequence[Line] = (),
        previous: str | None = None,
        link: str | None = None,
        link_label: str = "Continue the conversation",
    ) -> OutboxMail:
        token = self._tokens.issue(conversation.id)
        return compose(
            sender=sender,
            site_id=conversation.site_id,
            conversation_id=conversation.id,
            token=token,
            kind=kind,
            to_address=to_address,
            to_name=customer.name,
            subject=subject,
            agent=agent,
            intro=intro,
            lines=lines,
            link=link if link is not None else self.link(f"/mail/c/{token}"),
            link_label=link_label,
            previous_message_id=previous,
            public_url=self._public_url,
        )

    # -- an agent's reply by e-mail ------------------------------------------------------------------
    async def reply_by_email(self, agent: Agent, conversation_id: str, body: str) -> tuple[StoredMessage, OutboxMail]:
        """The agent's words go into the chat (as any reply) and out by mail to the visitor's address.

        The message goes through the message log (its own writer), so the mail cannot share its transaction;
        instead the mail row is written first, `waiting`, and names the message by its client_id
        (`outbox:<mail id>`). Once the message is stored the mail becomes due; if the process dies in between,
        `recover_waiting` finds the message by that client_id and sends the mail (or drops a mail whose
        message never got stored). Nothing is lost and nothing is sent for words that are not in the chat."""
        conversation, customer, site, sender = await self._context(conversation_id)
        if conversation.site_id != agent.site_id:
            raise NotFound("no such conversation")
        to_address = self.recipient(conversation, customer)
        if not to_address:
            raise NameplateError(ErrorCode.no_email, "this visitor left no e-mail address", 409)
        cleaned = self._conversations.clean_body(body)
        mail = self._mail(
            sender,
            conversation,
            customer,
            to_address,
            "reply",
            f"Re: your message to {site.name}",
            agent,
            cleaned,
            previous=await self._outbox.last_message_id(conversation.id),
        )
        mail.state = "waiting"
        await self._outbox.enqueue(mail)
        try:
            stored = await self._conversations.post(
                NewMessage(
                    conversation.id,
                    AuthorKind.agent.value,
                    cleaned,
                    agent_id=agent.id,
                    client_id=f"outbox:{mail.id}",
                    assigned_to=agent.id,
                ),
                {"kind": AuthorKind.agent.value, **(await self._directory.card(agent.id))},
                conversation.site_id,
            )
        except Exception:
            await self._outbox.settle_waiting(mail.id, None)
            raise
        await self._outbox.settle_waiting(mail.id, stored.seq)
        mail.state, mail.covers_seq = "pending", stored.seq
        return stored, mail

    async def recover_waiting(self, older_than_seconds: float = 60.0) -> int:
        """Reply mails left `waiting` by a process that died between writing the mail and its message."""
        cutoff = utcnow() - timedelta(seconds=older_than_seconds)
        async with self._sessions() as session:
            stuck = list(
                (
                    await session.execute(
                        select(col(OutboxMail.id), col(OutboxMail.conversation_id)).where(
                            col(OutboxMail.state) == "waiting",
                            col(OutboxMail.kind) == "reply",
                            col(OutboxMail.created_at) <= cutoff,
                        )
                    )
                ).all()
            )
            settled = 0
            for mail_id, conversation_id in stuck:
                seq = (
                    await session.execute(
                        select(col(Message.seq)).where(
                            col(Message.conversation_id) == conversation_id,
                            col(Message.client_id) == f"outbox:{mail_id}",
                        )
                    )
                ).scalar_one_or_none()
                settled += 1
                await self._outbox.settle_waiting(mail_id, seq)
        return settled

    # -- transcripts ---------------------------------------------------------------------------------
    async def send_transcript(
        self, conversation_id: str, site_id: str, to_address: str | None = None, by_visitor: bool = False
    ) -> OutboxMail:
        conversation, customer, site, sender = await self._context(conversation_id)
        if conversation.site_id != site_id:
            raise NotFound("no such conversation")
        if to_address:
            to_address = clean_address(to_address, "the e-mail address")
            if by_visitor and to_address != (conversation.offline_email or ""):
                # The address the visitor types becomes the one their replies are checked against.
                await self._conversations.set_offline_email(conversation.id, to_address)
        to_address = to_address or self.recipient(conversation, customer)
        if not to_address:
            raise NameplateError(ErrorCode.no_email, "there is no e-mail address to send the transcript to", 409)
        async with self._sessions() as session:
            sent = (
                await session.execute(
                    select(func.count())
                    .select_from(OutboxMail)
                    .where(col(OutboxMail.conversation_id) == conversation.id, col(OutboxMail.kind) == "transcript")
                )
            ).scalar_one()
        if sent >= MAX_TRANSCRIPTS_PER_CONVERSATION:
            raise NameplateError(ErrorCode.rate_limited, "this transcript has been sent often enough already", 429)
        lines = await self._lines(conversation.id)
        agent = await self._agent(conversation.agent_id)
        mail = self._mail(
            sender,
            conversation,
            customer,
            to_address,
            "transcript",
            f"Your conversation with {site.name}",
            agent,
            "Here is our conversation, as you asked. Reply to this e-mail if there is anything else.",
            lines,
            previous=await self._outbox.last_message_id(conversation.id),
        )
        mail.covers_seq = conversation.last_seq
        return await self._outbox.enqueue(mail)

    # -- rating links --------------------------------------------------------------------------------
    async def rating_target(self, token: str) -> tuple[Conversation, Site, Rating | None]:
        try:
            conversation_id = self._tokens.read(token).conversation_id
        except BadToken as exc:
            raise NameplateError(ErrorCode.bad_token, str(exc), 404) from exc
        async with self._sessions() as session:
            conversation = await session.get(Conversation, conversation_id)
            site = await session.get(Site, conversation.site_id) if conversation else None
            rating = await session.get(Rating, conversation_id)
        if conversation is None or site is None:
            raise NotFound("no such conversation")
        return conversation, site, rating

    async def rate_by_token(self, token: str, score: int, comment: str) -> None:
        if not 1 <= score <= 5:
            raise NameplateError(ErrorCode.invalid, "choose a score from 1 to 5", 422)
        if len(comment) > 2000:
            raise NameplateError(ErrorCode.too_large, "comments are limited to 2000 characters", 422)
        conversation, _site, _rating = await self.rating_target(token)
        await self._conversations.rate(conversation, score, comment)

    async def transcript_by_token(self, token: str) -> tuple[Conversation, Site, list[Line]]:
        conversation, site, _ = await self.rating_target(token)
        return conversation, site, await self._lines(conversation.id)

    # -- the sweep: scheduled mails ------------------------------------------------------------------
    async def sweep(self, force: bool = False) -> int:
        """Queue due rating and unread-replies mails; at most every few seconds per process."""
        now = time.monotonic()
        if not force and now - self._last_sweep < SWEEP_INTERVAL_SECONDS:
            return 0
        self._last_sweep = now
        return await self.recover_waiting() + await self.queue_unread_mails() + await self.queue_rating_mails()

    async def _store_once(self, mail: OutboxMail) -> bool:
        try:
            await self._outbox.enqueue(mail)
            return True
        except IntegrityError:
            return False  # another process stored it first

    async def queue_unread_mails(self) -> int:
        now = utcnow()
        quiet_since = now - timedelta(seconds=self.unread_delay_seconds)
        async with self._sessions() as session:
            rows = (
                await session.execute(
                    select(col(Conversation.id))
                    .join(Customer, col(Customer.id) == col(Conversation.customer_id))
                    .where(
                        col(Conversation.last_seq) > col(Conversation.visitor_read_seq),
                        col(Conversation.created_at) >= now - UNREAD_WINDOW,
                        (col(Conversation.offline_email).is_not(None)) | (col(Customer.email).is_not(None)),
                    )
                    .limit(SWEEP_BATCH)
                )
            ).scalars()
            candidates = list(rows)
        queued = 0
        for conversation_id in candidates:
            queued += await self._unread_mail(conversation_id, quiet_since)
        return queued

    async def _unread_mail(self, conversation_id: str, quiet_since: Any) -> int:
        async with self._sessions() as session:
            conversation = await session.get(Conversation, conversation_id)
            if conversation is None:
                return 0
            covered = (
                await session.execute(
                    select(func.max(col(OutboxMail.covers_seq))).where(
                        col(OutboxMail.conversation_id) == conversation_id
                    )
                )
            ).scalar_one_or_none() or 0
            after = max(covered, conversation.visitor_read_seq)
            unread = list(
                (
                    await session.execute(
                        select(Message)
                        .where(
                            col(Message.conversation_id) == conversation_id,
                            col(Message.seq) > after,
                            col(Message.author_kind) == AuthorKind.agent.value,
                            col(Message.private).is_(False),
                        )
                        .order_by(col(Message.seq))
                    )
                ).scalars()
            )
        if not unread:
            return 0
        newest = unread[-1].created_at
        if newest.tzinfo is None:
            newest = newest.replace(tzinfo=quiet_since.tzinfo)
        if newest > quiet_since:
            return 0  # still writing, or the visitor may still read it: wait for a quiet moment
        conversation, customer, site, sender = await self._context(conversation_id)
        to_address = self.recipient(conversation, customer)
        if not to_address:
            return 0
        agent = await self._agent(unread[-1].agent_id)
        lines = await self._lines(conversation_id, after_seq=after, agent_only=True)
        mail = self._mail(
            sender,
            conversation,
            customer,
            to_address,
            "unread",
            f"You have a reply from {site.name}",
            agent,
            "You left before we could answer — here is what we wrote:",
            lines,
            previous=await self._outbox.last_message_id(conversation_id),
        )
        mail.covers_seq = unread[-1].seq
        mail.message_id = self._fixed_id(mail, _derived_id("unread", f"{conversation_id}:{mail.covers_seq}"))
        return 1 if await self._store_once(mail) else 0

    @staticmethod
    def _fixed_id(mail: OutboxMail, stem: str) -> str:
        """Swap the random part of a composed Message-ID for one derived from what the mail covers."""
        return re.sub(r"^<[^.]+\.", f"<{stem}.", mail.message_id)

    async def queue_rating_mails(self) -> int:
        now = utcnow()
        closed_before = now - timedelta(seconds=self.rating_delay_seconds)
        async with self._sessions() as session:
            rated = select(col(Rating.conversation_id))
            mailed = select(col(OutboxMail.conversation_id)).where(
                col(OutboxMail.kind) == "rating", col(OutboxMail.conversation_id).is_not(None)
            )
            candidates = list(
                (
                    await session.execute(
                        select(col(Conversation.id))
                        .join(Customer, col(Customer.id) == col(Conversation.customer_id))
                        .where(
                            col(Conversation.status) == ConversationStatus.closed.value,
                            col(Conversation.agent_id).is_not(None),
                            col(Conversation.closed_at) <= closed_before,
                            col(Conversation.closed_at) >= now - RATING_WINDOW,
                            (col(Conversation.offline_email).is_not(None)) | (col(Customer.email).is_not(None)),
                            col(Conversation.id).not_in(rated),
                            col(Conversation.id).not_in(mailed),
                        )
                        .limit(SWEEP_BATCH)
                    )
                ).scalars()
            )
        queued = 0
        for conversation_id in candidates:
            conversation, customer, site, sender = await self._context(conversation_id)
            to_address = self.recipient(conversation, customer)
            if not to_address:
                continue
            agent = await self._agent(conversation.agent_id)
            token = self._tokens.issue(conversation.id)
            who = agent.given_name if agent else site.name
            mail = self._mail(
                sender,
                conversation,
                customer,
                to_address,
                "rating",
                f"How did {who} do?",
                agent,
                f"One question: how well did {who} help you? It takes one click and a second.",
                previous=await self._outbox.last_message_id(conversation.id),
                link=self.link(f"/mail/rate/{token}"),
                link_label="Rate this conversation",
            )
            mail.covers_seq = conversation.last_seq
            mail.message_id = self._fixed_id(mail, _derived_id("rating", conversation.id))
            queued += 1 if await self._store_once(mail) else 0
        return queued

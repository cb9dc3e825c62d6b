"""The running server's parts, built once per process and shared by every endpoint."""

from __future__ import annotations

import asyncio
import logging
import weakref
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from nameplate.broker import make_broker
from nameplate.broker.base import Broker
from nameplate.chat.conversations import Conversations
from nameplate.config import Settings
from nameplate.desk.audit import Audit
from nameplate.insight.service import Insight
from nameplate.integrations.api_keys import ApiKeys
from nameplate.integrations.webhooks import Webhooks
from nameplate.mail.service import Mail
from nameplate.people.credentials import VisitorTokens
from nameplate.people.customers import Customers
from nameplate.people.directory import Directory
from nameplate.people.identity import Identity
from nameplate.people.timeline import Timeline
from nameplate.routing.presence import Presence
from nameplate.routing.router import Router
from nameplate.store.engine import Sessions, make_engine, make_sessions
from nameplate.store.message_log.log import MessageLog
from nameplate.store.migrate import prepare_schema

log = logging.getLogger("nameplate")

# Open sockets re-synced at once after a broker outage: enough to keep the store busy, not to swamp it.
RESYNC_CONCURRENCY = 32


class Resyncable(Protocol):
    """An open socket's session, which can catch up from the store on what the broker may have dropped."""

    async def resync(self) -> None: ...


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    sessions: Sessions
    broker: Broker
    message_log: MessageLog
    tokens: VisitorTokens
    directory: Directory
    customers: Customers
    conversations: Conversations
    router: Router
    presence: Presence
    identity: Identity
    webhooks: Webhooks
    api_keys: ApiKeys
    timeline: Timeline
    insight: Insight
    mail: Mail
    audit: Audit
    # Every open socket's session in this process (see resync_sockets); weak, so a forgotten one goes away.
    sockets: weakref.WeakSet[Resyncable] = field(default_factory=weakref.WeakSet)

    @classmethod
    def build(cls, settings: Settings) -> Services:
        engine = make_engine(settings.database_url, settings.database_pool_size)
        sessions = make_sessions(engine)
        broker = make_broker(settings.redis_url, settings.redis_prefix)
        message_log = MessageLog(engine)
        tokens = VisitorTokens(
            settings.secret_key,
            anonymous_seconds=int(settings.anonymous_token_days * 86400),
            verified_seconds=int(settings.verified_token_hours * 3600),
        )
        directory = Directory(sessions, settings.agent_default_capacity)
        customers = Customers(sessions, tokens)
        webhooks = Webhooks(sessions, allow_private=settings.webhooks_allow_private)
        conversations = Conversations(sessions, message_log, broker, directory, settings.max_message_chars, webhooks)
        router = Router(sessions, broker, conversations, directory, webhooks)
        router.abandon_grace_seconds = settings.abandon_grace_seconds
        presence = Presence(broker, router, settings.agent_grace_seconds, settings.presence_interval_seconds)
        # Insight's follow-ups and digests go out through the e-mail outbox (the dev outbox without SMTP_URL).
        mail = Mail(settings, sessions, conversations, router, directory)
        return cls(
            settings,
            engine,
            sessions,
            broker,
            message_log,
            tokens,
            directory,
            customers,
            conversations,
            router,
            presence,
            Identity(sessions, tokens),
            webhooks,
            ApiKeys(sessions),
            Timeline(sessions),
            Insight(
                sessions,
                directory,
                settings.digest_time,
                settings.digest_timezone,
                settings.topics_embedder,
                outbox=mail.insight,
            ),
            mail,
            Audit(sessions),
        )

    async def start(self) -> None:
        # SQLite (embedded) migrates itself; PostgreSQL is migrated by `nameplate migrate` (the release phase)
        # and a process refuses to start on a schema that is not at head.
        await prepare_schema(self.engine)
        await self.broker.connect()
        self.broker.on_reset(self.recover_broker_state)
        self.message_log.start()
        # The broker may be new (memory) or shared (Redis): make sure it reflects the store.
        await self.router.rebuild()
        self.presence.start()
        self.webhooks.start()
        self.insight.start()
        await self.mail.start()
        await self.router.drain_all()

    async def recover_broker_state(self) -> None:
        """Redis was flushed or restarted: rebuild queue and loads from the store, presence from sockets."""
        log.warning("the broker lost its state; rebuilding it from the store and live sockets")
        try:
            await self.router.rebuild()
            await self.presence.reregister()
            await self.router.drain_all()
        finally:
            # Whatever the rebuild managed: events may have been lost, and the sockets are re-synced.
            await self.resync_sockets()

    async def resync_sockets(self) -> None:
        """Every open socket of this process catches up from the store: messages after the last one it
        delivered, and what changed in its conversations (joined, transferred, closed). Runs after the
        broker's subscriber is back, so nothing published from now on is missed either."""
        sessions = list(self.sockets)
        gate = asyncio.Semaphore(RESYNC_CONCURRENCY)

        async def one(session: Resyncable) -> None:
            async with gate:
                try:
                    await session.resync()
                except Exception:
                    log.exception("re-syncing a socket from the store failed")

        await asyncio.gather(*(one(session) for session in sessions))
        if sessions:
            log.info("re-synced %d socket(s) from the store", len(sessions))

    async def stop(self) -> None:
        await self.insight.stop()
        await self.mail.stop()
        await self.webhooks.stop()
        await self.presence.stop()
        await self.router.stop()
        await self.message_log.stop()
        await self.broker.disconnect()
        await self.engine.dispose()

    async def store_ready(self) -> bool:
        try:
            async with self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
            return True
        except Exception:
            log.exception("store check failed")
            return False

"""The durable store's tables (SQLModel). The store is the truth; the broker only mirrors what is fast-moving."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, LargeBinary, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from nameplate.protocol.vocabulary import AuthorKind, ConversationStatus, Role, Visibility

__all__ = ["AuthorKind", "ConversationStatus", "Role"]  # the store's own words, re-exported for its callers


def new_id() -> str:
    """A short random id: unguessable on the wire, unlike a counter."""
    return secrets.token_urlsafe(12)


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    """ISO-8601 in UTC with a 'Z', the one time format on the wire."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # the store keeps UTC; a naive value is UTC, not local time
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


class Site(SQLModel, table=True):
    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    public_key: str = Field(default_factory=lambda: "site_" + secrets.token_urlsafe(12), unique=True, max_length=64)
    name: str = Field(max_length=200)
    # Space-separated origins allowed to embed the widget; "*" allows any.
    allowed_origins: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    # Key for identity verification: user_hash = HMAC-SHA256(secret, user_id).
    secret: str = Field(default_factory=lambda: secrets.token_urlsafe(32), max_length=128)
    require_verification: bool = False
    created_at: datetime = Field(default_factory=utcnow)

    def origin_allowed(self, origin: str | None) -> bool:
        """Browsers always send Origin on websockets; a client without one is not a browser page."""
        if origin is None:
            return True
        allowed = self.allowed_origins.split()
        return "*" in allowed or origin.rstrip("/") in (o.rstrip("/") for o in allowed)


class Team(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("site_id", "name"),)
    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    site_id: str = Field(foreign_key="site.id", index=True, max_length=32)
    name: str = Field(max_length=100)


class Agent(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("site_id", "email"),)
    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    site_id: str = Field(foreign_key="site.id", index=True, max_length=32)
    given_name: str = Field(max_length=100)
    family_name: str = Field(max_length=100)
    title: str = Field(default="", max_length=120)
    intro: str = Field(default="", max_length=280)
    email: str = Field(max_length=254)
    password_hash: str = Field(max_length=255)
    role: str = Field(default=Role.agent, max_length=20)
    capacity: int = 3
    active: bool = True
    # Bumped on deactivation and password reset: every older session cookie stops working.
    session_version: int = 0
    photo_version: int = 0
    created_at: datetime = Field(default_factory=utcnow)

    @property
    def full_name(self) -> str:
        return f"{self.given_name} {self.family_name}"

    @property
    def photo_url(self) -> str | None:
        return f"/agents/{self.id}/photo?v={self.photo_version}" if self.photo_version else None


class AgentTeam(SQLModel, table=True):
    agent_id: str = Field(foreign_key="agent.id", primary_key=True, max_length=32)
    team_id: str = Field(foreign_key="team.id", primary_key=True, max_length=32)


class AgentPhoto(SQLModel, table=True):
    """Kept in the store, not on disk, so every process serves the same photo without shared storage."""

    agent_id: str = Field(foreign_key="agent.id", primary_key=True, max_length=32)
    content_type: str = Field(max_length=50)
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow)


class Customer(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("site_id", "external_id"),)
    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    site_id: str = Field(foreign_key="site.id", index=True, max_length=32)
    # The website's own user id, set only by a verified identify.
    external_id: str | None = Field(default=None, max_length=200)
    name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=254)
    verified: bool = False
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # When an anonymous record is folded into a verified one, its visitor token follows the pointer.
    merged_into: str | None = Field(default=None, max_length=32)
    current_url: str | None = Field(default=None, max_length=2000)
    current_title: str | None = Field(default=None, max_length=300)
    locale: str | None = Field(default=None, max_length=35)
    timezone: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    last_seen_at: datetime = Field(default_factory=utcnow)


class Conversation(SQLModel, table=True):
    __table_args__ = (
        # The supervisor's list reads a site's conversations newest first (created_at, then id), filtered by
        # status, team or dates: one index per shape reads the first page without a sort (bench/search.py).
        Index("ix_conversation_site_status", "site_id", "status", "created_at", "id"),
        Index("ix_conversation_site_created", "site_id", "created_at", "id"),
        Index("ix_conversation_site_team", "site_id", "team_id", "created_at", "id"),
        Index("ix_conversation_customer", "customer_id", "created_at"),
    )
    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    site_id: str = Field(foreign_key="site.id", max_length=32)
    customer_id: str = Field(foreign_key="customer.id", max_length=32)
    status: str = Field(default=ConversationStatus.queued, max_length=10)
    agent_id: str | None = Field(default=None, foreign_key="agent.id", index=True, max_length=32)
    team_id: str | None = Field(default=None, foreign_key="team.id", max_length=32)
    # The last seq handed out; bumped in the transaction that stores the message, so seqs are gap-free.
    last_seq: int = 0
    # Read receipts: the highest seq each side has seen, so a reload shows "read" correctly.
    visitor_read_seq: int = 0
    agent_read_seq: int = 0
    # Where the reply goes when no agent was online.
    offline_email: str | None = Field(default=None, max_length=254)
    created_at: datetime = Field(default_factory=utcnow)
    assigned_at: datetime | None = None
    first_agent_reply_at: datetime | None = None
    closed_at: datetime | None = None


class Message(SQLModel, table=True):
    __table_args__ = (
        UniqueConstraint("conversation_id", "seq"),
        # Per author: a client_id is the sender's own idempotency key, and one side reusing the other's
        # (by chance or on purpose) must not make a message vanish as a "retry".
        UniqueConstraint("conversation_id", "author_kind", "client_id"),
        # "Conversations this agent worked on" (desk/transcripts.worked_on); visitors' and system lines,
        # most of the table, have no agent and stay out of it.
        Index(
            "ix_message_agent",
            "agent_id",
            "conversation_id",
            postgresql_where=text("agent_id IS NOT NULL"),
            sqlite_where=text("agent_id IS NOT NULL"),
        ),
        # Full-text search of body lives outside the models: a generated tsvector column with a GIN index on
        # PostgreSQL, an FTS5 table and its triggers on SQLite (migration 0007; migrate.UNMODELLED_NAMES).
    )
    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(foreign_key="conversation.id", max_length=32)
    seq: int
    author_kind: str = Field(max_length=10)
    agent_id: str | None = Field(default=None, foreign_key="agent.id", max_length=32)
    body: str = Field(sa_column=Column(Text, nullable=False))
    # Private notes are for agents and supervisors only; the visitor socket never carries them.
    private: bool = False
    # What kind of message it is (`Visibility`): public, a private note or a supervisor's whisper. `private`
    # stays "not for the visitor" (true for notes and whispers); this says which.
    visibility: str = Field(default=Visibility.public, max_length=10, sa_column_kwargs={"server_default": "public"})
    client_id: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class Rating(SQLModel, table=True):
    conversation_id: str = Field(foreign_key="conversation.id", primary_key=True, max_length=32)
    score: int
    comment: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    created_at: datetime = Field(default_factory=utcnow)


class PageView(SQLModel, table=True):
    __table_args__ = (Index("ix_pageview_customer", "customer_id", "viewed_at"),)
    id: int | None = Field(default=None, primary_key=True)
    customer_id: str = Field(foreign_key="customer.id", max_length=32)
    url: str = Field(max_length=2000)
    title: str = Field(default="", max_length=300)
    viewed_at: datetime = Field(default_factory=utcnow)


class CannedResponse(SQLModel, table=True):
    """A site's saved reply, inserted in the composer with /shortcut."""

    __table_args__ = (UniqueConstraint("site_id", "shortcut"),)
    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    site_id: str = Field(foreign_key="site.id", index=True, max_length=32)
    shortcut: str = Field(max_length=40)
    body: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class ApiKey(SQLModel, table=True):
    """A site's server-to-server key. Only a hash is kept; the key itself is shown once, at creation."""

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    site_id: str = Field(foreign_key="site.id", index=True, max_length=32)
    name: str = Field(max_length=100)
    # The first characters, so people can tell their keys apart without the store holding the key.
    prefix: str = Field(max_length=16)
    key_hash: str = Field(unique=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None


class CustomerEvent(SQLModel, table=True):
    """Something that happened to a customer on another channel: a call, a store visit, an e-mail."""

    __table_args__ = (
        UniqueConstraint("site_id", "event_id"),
        Index("ix_customerevent_customer", "customer_id", "occurred_at"),
    )
    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    site_id: str = Field(foreign_key="site.id", max_length=32)
    customer_id: str = Field(foreign_key="customer.id", max_length=32)
    # The sender's own id for the event: posting it twice stores it once.
    event_id: str = Field(max_length=100)
    channel: str = Field(max_length=20)
    summary: str = Field(max_length=500)
    details: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    agent_email: str | None = Field(default=None, max_length=254)
    occurred_at: datetime
    created_at: datetime = Field(default_factory=utcnow)


class Webhook(SQLModel, table=True):
    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    site_id: str = Field(foreign_key="site.id", index=True, max_length=32)
    url: str = Field(max_length=2000)
    secret: str = Field(default_factory=lambda: secrets.token_urlsafe(32), max_length=128)
    # Space-separated event types, or "*" for all.
    events: str = Field(default="*", max_length=500)
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow)


class WebhookDelivery(SQLModel, table=True):
    __table_args__ = (Index("ix_webhookdelivery_due", "status", "next_attempt_at"),)
    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    webhook_id: str = Field(foreign_key="webhook.id", index=True, max_length=32)
    event_type: str = Field(max_length=50)
    payload: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(default="pending", max_length=10)  # pending | delivered | failed
    attempts: int = 0
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, max_length=500)
    next_attempt_at: datetime = Field(default_factory=utcnow)
    created_at: datetime = Field(default_factory=utcnow)
    delivered_at: datetime | None = None


class InsightEvent(SQLModel, table=True):
    """One thing that happened to a conversation, appended in the transaction that made it happen.

    Every report figure is computed from these rows (see `nameplate.insight.metrics`), never from the
    conversation's own columns, which a transfer or a requeue overwrites. Kinds: `nameplate.insight.events`.
    """

    __tablename__ = "insight_event"
    __table_args__ = (
        Index("ix_insight_event_site_at", "site_id", "at"),
        Index("ix_insight_event_conversation", "conversation_id", "id"),
        Index("ix_insight_event_site_kind_at", "site_id", "kind", "at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    site_id: str = Field(max_length=32)
    conversation_id: str = Field(max_length=32)
    kind: str = Field(max_length=20)
    at: datetime = Field(default_factory=utcnow)
    team_id: str | None = Field(default=None, max_length=32)
    agent_id: str | None = Field(default=None, max_length=32)
    # Seconds for a wait or a first reply, the score for a rating; None when the kind carries none.
    value: float | None = None
    # A little text the kind needs: the page a visitor left from, the agent a chat was handed to.
    detail: str | None = Field(default=None, max_length=2000)


class InsightLease(SQLModel, table=True):
    """Work done once across every process (a digest for one site and day): whoever inserts the row does it."""

    __tablename__ = "insight_lease"
    name: str = Field(primary_key=True, max_length=200)
    holder: str = Field(max_length=100)
    taken_at: datetime = Field(default_factory=utcnow)


class SiteMail(SQLModel, table=True):
    """A site's e-mail settings, edited by its admins. Absent: the defaults built from the site's name."""

    site_id: str = Field(foreign_key="site.id", primary_key=True, max_length=32)
    # Mail goes out From this address (the site's own domain, so that SPF/DKIM align for DMARC).
    from_address: str = Field(max_length=254)
    # Replies come back to reply+<token>@ this domain (its MX points at the listener or a provider's hook).
    inbound_domain: str = Field(max_length=253)
    updated_at: datetime = Field(default_factory=utcnow)


class OutboxMail(SQLModel, table=True):
    """Every mail the product sends is a row here first, written with what caused it; the sender delivers it.
    Without SMTP_URL the row itself is the dev outbox, read in the console."""

    __table_args__ = (
        Index("ix_outboxmail_due", "state", "next_attempt_at"),
        Index("ix_outboxmail_conversation", "conversation_id", "created_at"),
    )
    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    site_id: str = Field(foreign_key="site.id", index=True, max_length=32)
    conversation_id: str | None = Field(default=None, foreign_key="conversation.id", max_length=32)
    kind: str = Field(max_length=20)  # reply | unread | transcript | rating
    to_address: str = Field(max_length=254)
    subject: str = Field(max_length=300)
    text_body: str = Field(sa_column=Column(Text, nullable=False))
    html_body: str = Field(sa_column=Column(Text, nullable=False))
    # The rest of the headers (From, Reply-To, References …), fixed at creation like the Message-ID.
    headers: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # Fixed when the row is written: a retry after a crash sends the same id, so a receiver drops the repeat.
    message_id: str = Field(unique=True, max_length=300)
    state: str = Field(default="pending", max_length=10)  # waiting | pending | sent | failed | skipped
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=500)
    next_attempt_at: datetime = Field(default_factory=utcnow)
    # "smtp" or "dev" (kept in the store only, no SMTP_URL).
    transport: str | None = Field(default=None, max_length=10)
    # The last conversation message this mail carries to the customer: agent replies up to here need no
    # "unread replies" mail.
    covers_seq: int | None = None
    created_at: datetime = Field(default_factory=utcnow)
    sent_at: datetime | None = None


class InboundMail(SQLModel, table=True):
    """Every mail that reached the inbound parser, kept whole, with what became of it."""

    __table_args__ = (Index("ix_inboundmail_conversation", "conversation_id", "created_at"),)
    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    site_id: str | None = Field(default=None, foreign_key="site.id", index=True, max_length=32)
    conversation_id: str | None = Field(default=None, foreign_key="conversation.id", max_length=32)
    from_address: str = Field(default="", max_length=254)
    subject: str = Field(default="", max_length=300)
    message_id: str = Field(default="", max_length=300)
    # posted | held (sender is not the customer) | auto_reply (recorded, never answered) | refused
    status: str = Field(max_length=12)
    reason: str = Field(default="", max_length=500)
    # The reply as it went into the chat: quoted history and signature stripped.
    body: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    attachments: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    # The conversation message it became (seq), once posted.
    seq: int | None = None
    created_at: datetime = Field(default_factory=utcnow)


class AuditEntry(SQLModel, table=True):
    """Append-only: who watched, whispered, took over, exported or changed something, when and from where.
    Nothing updates or deletes these rows (`desk/audit.py` only inserts and reads)."""

    __table_args__ = (Index("ix_auditentry_site_at", "site_id", "at"),)
    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    site_id: str = Field(foreign_key="site.id", max_length=32)
    at: datetime = Field(default_factory=utcnow)
    # The actor as they were: the name is kept, so the record reads the same after a rename.
    actor_id: str | None = Field(default=None, max_length=32)
    actor_name: str = Field(default="", max_length=201)
    action: str = Field(max_length=40)
    target: str = Field(default="", max_length=300)
    details: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    address: str = Field(default="", max_length=64)

"""The words the store, the broker and the wire share: statuses, presence, roles, author kinds, error codes.

Each is a `StrEnum`, so a member is its own string: it goes into a column, a Redis hash or a JSON frame as is,
and compares equal to the string a client sends. This module imports nothing of the project's, so every layer
can use it.
"""

from __future__ import annotations

from enum import StrEnum


class ConversationStatus(StrEnum):
    queued = "queued"
    active = "active"
    closed = "closed"


class AuthorKind(StrEnum):
    visitor = "visitor"
    agent = "agent"
    system = "system"


class Role(StrEnum):
    agent = "agent"
    supervisor = "supervisor"
    admin = "admin"


# Who reads every transcript, watches the live board and manages agents: the one definition of "staff".
STAFF_ROLES = frozenset({Role.supervisor, Role.admin})


def is_staff(role: str) -> bool:
    return role in STAFF_ROLES


class Presence(StrEnum):
    """An agent's routing status. `offline`: no console socket (after the grace period)."""

    available = "available"
    away = "away"
    offline = "offline"


class Side(StrEnum):
    """Who did something in a conversation (typing, read marks)."""

    visitor = "visitor"
    agent = "agent"


class UnassignReason(StrEnum):
    offline = "offline"
    transferred = "transferred"
    # a supervisor took the chat over (`takeover`)
    taken_over = "taken_over"
    # handed to this agent, who did not open it in time: it went back to the queue
    not_picked_up = "not_picked_up"


class Visibility(StrEnum):
    """Who may read a message. `public`: everyone in the chat; `note`: a private note among staff; `whisper`:
    a supervisor's word to the agent. Only `public` ever reaches the visitor — every path that sends messages
    out (live delivery, replays, exports, webhooks, e-mail) asks `visible_to_visitor`."""

    public = "public"
    note = "note"
    whisper = "whisper"


def visible_to_visitor(visibility: str) -> bool:
    """The one rule for "may the visitor (or anything outside the desk) see this message"."""
    return visibility == Visibility.public


class AuditAction(StrEnum):
    """What the audit log records (`desk/audit.py`): supervision, exports and every change to the desk."""

    watched = "watched"
    whispered = "whispered"
    took_over = "took_over"
    exported = "exported"
    agent_created = "agent_created"
    agent_changed = "agent_changed"
    team_changed = "team_changed"
    api_key_created = "api_key_created"
    api_key_revoked = "api_key_revoked"
    webhook_created = "webhook_created"
    webhook_deleted = "webhook_deleted"
    site_settings_changed = "site_settings_changed"


class EventKind(StrEnum):
    """What an insight event records (the store's `insight_event.kind`; see insight/events.py)."""

    queued = "queued"  # waiting for an agent: a new conversation, a requeue, a transfer to a team
    assigned = "assigned"  # an agent took it (value: seconds waited since queued, when it was queued)
    first_reply = "first_reply"  # the first public agent message (value: seconds since the visitor's first)
    transfer = "transfer"  # agent_id handed it on; detail: the agent it went to, or "team:<id>"
    left = "left"  # the visitor gave up while queued (value: seconds waited; detail: the page)
    closed = "closed"  # agent_id: who served at close, None if nobody did
    rated = "rated"  # value: the score; agent_id: who served at close (credited the rating)
    emailed = "emailed"  # a follow-up e-mail went to the visitor; agent_id: whose name it carried


class ErrorCode(StrEnum):
    """Every `code` of an `error` frame, a close reason and a JSON error body."""

    # the request or frame itself
    bad_json = "bad_json"
    bad_frame = "bad_frame"
    unknown_type = "unknown_type"
    hello_required = "hello_required"
    invalid = "invalid"
    invalid_email = "invalid_email"
    invalid_attributes = "invalid_attributes"
    empty = "empty"
    too_large = "too_large"
    bad_image = "bad_image"
    # who is asking
    unauthorized = "unauthorized"
    bad_credentials = "bad_credentials"
    forbidden = "forbidden"
    csrf = "csrf"
    origin = "origin"
    unknown_site = "unknown_site"
    bad_token = "bad_token"
    verification_required = "verification_required"
    session_ended = "session_ended"
    # the state of things
    not_found = "not_found"
    exists = "exists"
    conflict = "conflict"
    no_conversation = "no_conversation"
    not_queued = "not_queued"
    # a transfer to someone offline, away or full
    colleague_unavailable = "colleague_unavailable"
    rate_limited = "rate_limited"
    not_abandoned = "not_abandoned"
    already_sent = "already_sent"
    no_email = "no_email"
    # e-mail (server/mail)
    malformed = "malformed"
    not_held = "not_held"
    not_failed = "not_failed"
    internal = "internal"

"""Insight's one way out to e-mail: `send`, which puts a mail into the outbox in the caller's transaction.

`Outbox` is the interface insight needs: `add` writes one outgoing mail into the caller's session, so the mail
exists exactly when what caused it does (the follow-up's `emailed` event, a digest's lease row), and `wake`
tells the sender there is something to send once that session committed. The real implementation is the
e-mail outbox's adapter (`nameplate.mail.insight_mail.InsightMail`, passed in by `Services.build`): it composes
the row (From the person's name at the site's sending address, a reply token for a conversation) and stores
it. `MemoryOutbox` is a stand-in for an `Insight` built on its own, without the mail domain.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from nameplate.store.models import utcnow

MAX_SUBJECT_CHARS = 200
MAX_NAME_CHARS = 100
# Line breaks in a header would let text a visitor typed add headers of its own.
_HEADER_BREAKS = re.compile(r"[\r\n\t\x00-\x1f\x7f]+")


def header_safe(value: str, limit: int) -> str:
    """One line, no control characters, capped: safe in a Subject or a From display name."""
    return _HEADER_BREAKS.sub(" ", value).strip()[:limit]


@dataclass(frozen=True)
class OutgoingMail:
    to: str
    subject: str
    # The body paragraphs; the outbox adds the greeting (from `to_name`) and the sender's signature.
    text: str
    # The display name the mail comes from (the sending address is always the site's own).
    from_name: str
    site_id: str
    # The conversation a reply threads back into (the follow-up), None for a digest.
    conversation_id: str | None = None
    # The person the mail is from (the follow-up's chosen agent or supervisor), None: from the site.
    agent_id: str | None = None
    to_name: str | None = None
    # What sent it (follow_up, daily_digest, weekly_digest): the outbox row's kind.
    category: str = "insight"
    queued_at: object = field(default_factory=utcnow)


class Outbox(Protocol):
    async def add(self, session: AsyncSession, mail: OutgoingMail) -> None: ...

    def wake(self) -> None: ...


class MemoryOutbox:
    """The stand-in outbox: this process's mails, newest last (a rolled-back session keeps its mails here)."""

    def __init__(self) -> None:
        self.mails: list[OutgoingMail] = []

    async def add(self, session: AsyncSession, mail: OutgoingMail) -> None:
        self.mails.append(mail)

    def wake(self) -> None:
        pass


def safe(mail: OutgoingMail) -> OutgoingMail:
    return replace(
        mail,
        to=header_safe(mail.to, 254),
        subject=header_safe(mail.subject, MAX_SUBJECT_CHARS),
        from_name=header_safe(mail.from_name, MAX_NAME_CHARS),
        to_name=header_safe(mail.to_name, MAX_NAME_CHARS) if mail.to_name else None,
    )


async def send(outbox: Outbox, session: AsyncSession, mail: OutgoingMail) -> OutgoingMail:
    """The single place insight sends mail from: headers made safe, then into the outbox in `session`'s
    transaction (the caller commits, then calls `outbox.wake()`)."""
    cleaned = safe(mail)
    await outbox.add(session, cleaned)
    return cleaned

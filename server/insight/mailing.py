"""Insight's one way out to e-mail: `send`, which hands a mail to the outbox.

The e-mail outbox (`nameplate.mail`) is being built in parallel. Until it lands, `Outbox` is the minimal
interface insight needs — one method that stores one outgoing mail — and `MemoryOutbox` keeps the mails of
this process (the dev outbox of the demo reads it). Wiring the real outbox means passing it here instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

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
    text: str
    from_name: str
    reply_to: str | None = None
    # What sent it (follow-up, daily digest, weekly digest): lets the outbox and its tests tell them apart.
    category: str = "insight"
    queued_at: object = field(default_factory=utcnow)


class Outbox(Protocol):
    async def enqueue(self, mail: OutgoingMail) -> None: ...


class MemoryOutbox:
    """The stand-in outbox: this process's mails, newest last."""

    def __init__(self) -> None:
        self.mails: list[OutgoingMail] = []

    async def enqueue(self, mail: OutgoingMail) -> None:
        self.mails.append(mail)


async def send(outbox: Outbox, mail: OutgoingMail) -> None:
    """The single place insight sends mail from: headers made safe, then into the outbox."""
    await outbox.enqueue(
        OutgoingMail(
            to=header_safe(mail.to, 254),
            subject=header_safe(mail.subject, MAX_SUBJECT_CHARS),
            text=mail.text,
            from_name=header_safe(mail.from_name, MAX_NAME_CHARS),
            reply_to=header_safe(mail.reply_to, 254) if mail.reply_to else None,
            category=mail.category,
        )
    )

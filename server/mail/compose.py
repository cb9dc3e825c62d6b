"""Building the mails: outbox rows from what an agent wrote, and RFC 5322 messages from outbox rows.

From is the agent's full name at the site's own sending address (DMARC wants the From domain to be the
site's); the routing token rides in Reply-To (`reply+<token>@<inbound domain>`) and in Message-ID and
References, never in From. Everything a person typed is cleaned before it reaches a header: CR, LF and
other control characters become spaces, so a visitor's name can never start a header of its own.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr

from nameplate.store.models import Agent, OutboxMail, new_id, utcnow

MAX_HEADER_CHARS = 200
# Mails to supervisors about no conversation (insight's digests): machine-sent, no reply token.
DIGEST_KINDS = ("daily_digest", "weekly_digest")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]+")


def header_text(value: str, limit: int = MAX_HEADER_CHARS) -> str:
    """A value safe for a header: no CR/LF or other control characters, bounded."""
    return " ".join(_CONTROL.sub(" ", value).split())[:limit]


@dataclass(frozen=True)
class Sender:
    """Where a site's mail comes from and where its replies go."""

    site_name: str
    from_address: str
    inbound_domain: str


@dataclass(frozen=True)
class Line:
    """One message of the conversation as a mail quotes it."""

    author: str
    body: str
    sent_at: datetime


def reply_address(sender: Sender, token: str) -> str:
    return f"reply+{token}@{sender.inbound_domain}"


def thread_root(sender: Sender, token: str) -> str:
    """The Message-ID every mail of a conversation refers to, so mail clients keep them in one thread."""
    return f"<thread.{token}@{sender.inbound_domain}>"


def from_header(sender: Sender, agent: Agent | None) -> str:
    site = header_text(sender.site_name, 80)
    name = f"{header_text(agent.full_name, 100)} ({site})" if agent is not None else site
    return formataddr((name, sender.from_address))


def _signature_text(agent: Agent | None, sender: Sender) -> list[str]:
    if agent is None:
        return [sender.site_name]
    role = ", ".join(part for part in (agent.title, sender.site_name) if part)
    return [agent.full_name, role]


def _signature_html(agent: Agent | None, sender: Sender, public_url: str | None) -> str:
    if agent is None:
        return f"<p>{html.escape(sender.site_name)}</p>"
    photo = ""
    if agent.photo_url and public_url:
        photo = (
            f'<img src="{html.escape(public_url + agent.photo_url)}" alt="" width="48" height="48" '
            'style="border-radius:24px;vertical-align:middle;margin-right:8px">'
        )
    role = ", ".join(part for part in (agent.title, sender.site_name) if part)
    return (
        f'<p style="margin-top:24px">{photo}<strong>{html.escape(agent.full_name)}</strong><br>'
        f'<span style="color:#555">{html.escape(role)}</span></p>'
    )


def _paragraphs_html(text: str) -> str:
    return "".join(f"<p>{html.escape(part).replace(chr(10), '<br>')}</p>" for part in text.split("\n\n") if part)


def compose(
    *,
    sender: Sender,
    site_id: str,
    conversation_id: str | None,
    token: str | None,
    kind: str,
    to_address: str,
    to_name: str | None,
    subject: str,
    agent: Agent | None,
    intro: str,
    lines: Sequence[Line] = (),
    link: str | None = None,
    link_label: str = "Continue the conversation",
    previous_message_id: str | None = None,
    public_url: str | None = None,
) -> OutboxMail:
    """An outbox row, text and HTML, with every header fixed now (a retry resends exactly this).

    Without a token (a mail about no conversation, such as a supervisor's digest) there is no Reply-To and
    no thread: a reply goes to the site's own sending address, not into a conversation."""
    mail_id = new_id()
    local_id = re.sub(r"[^A-Za-z0-9]", "", mail_id)
    message_id = f"<{local_id}.{token}@{sender.inbound_domain}>" if token else f"<{local_id}@{sender.inbound_domain}>"
    references = thread_root(sender, token) if token else ""
    if previous_message_id and previous_message_id != references:
        references = f"{references} {previous_message_id}".strip()
    first_name = header_text((to_name or "").split(" ")[0], 60) if to_name else ""
    salutation = f"Hi {first_name}," if first_name else "Hello,"
    signer = agent.given_name if agent is not None else sender.site_name

    text_parts = [salutation, "", intro, ""]
    html_parts = [f"<p>{html.escape(salutation)}</p>", _paragraphs_html(intro)]
    if lines:
        for line in lines:
            stamp = line.sent_at.strftime("%d %b %Y %H:%M UTC")
            text_parts += [f"{line.author} — {stamp}", line.body, ""]
            html_parts.append(
                f'<p><strong>{html.escape(line.author)}</strong> <span style="color:#777">{html.escape(stamp)}'
                f"</span><br>{html.escape(line.body).replace(chr(10), '<br>')}</p>"
            )
    text_parts += ["—", *_signature_text(agent, sender)]
    html_parts.append(_signature_html(agent, sender, public_url))
    if link:
        text_parts += ["", f"{link_label}: {link}"]
        html_parts.append(f'<p><a href="{html.escape(link)}">{html.escape(link_label)}</a></p>')
    if token:
        footer = f"Reply to this e-mail and your answer reaches {signer} directly."
        text_parts += ["", footer]
        html_parts.append(f'<p style="color:#777;font-size:small">{html.escape(footer)}</p>')

    headers = {
        "From": from_header(sender, agent),
        "Date": format_datetime(utcnow()),
        # Our own marker: a mail that comes back carrying it is one of ours looping, not a customer.
        "X-Loop": f"nameplate@{sender.inbound_domain}",
    }
    if token:
        headers["Reply-To"] = reply_address(sender, token)
    if references:
        headers["References"] = references
    if previous_message_id:
        headers["In-Reply-To"] = previous_message_id
    if kind in ("rating", "unread", *DIGEST_KINDS):
        headers["Auto-Submitted"] = "auto-generated"
    to_header = formataddr((header_text(to_name, 100), to_address)) if to_name else to_address
    headers["To"] = to_header
    return OutboxMail(
        id=mail_id,
        site_id=site_id,
        conversation_id=conversation_id,
        kind=kind,
        to_address=to_address,
        subject=header_text(subject, 300),
        text_body="\n".join(text_parts) + "\n",
        html_body='<!doctype html><html><body style="font-family:sans-serif">' + "".join(html_parts) + "</body></html>",
        headers=headers,
        message_id=message_id,
    )


def to_message(mail: OutboxMail) -> EmailMessage:
    """The RFC 5322 message for an outbox row; the same bytes-worth of headers on every attempt."""
    message = EmailMessage()
    for name, value in mail.headers.items():
        message[name] = header_text(str(value), 998)
    message["Subject"] = header_text(mail.subject, 300)
    message["Message-ID"] = mail.message_id
    message.set_content(mail.text_body)
    message.add_alternative(mail.html_body, subtype="html")
    return message


def customer_reply(mail: OutboxMail, text: str, from_address: str | None = None) -> bytes:
    """The mail a customer's client would send in answer to `mail`: quoted history and all. The dev outbox's
    "reply as the customer" form feeds this to the inbound parser, exactly as a real reply would arrive."""
    message = EmailMessage()
    message["From"] = from_address or mail.headers.get("To") or mail.to_address
    message["To"] = mail.headers.get("Reply-To", "")
    message["Subject"] = "Re: " + header_text(mail.subject, 290)
    message["In-Reply-To"] = mail.message_id
    message["References"] = f"{mail.headers.get('References', '')} {mail.message_id}".strip()
    message["Message-ID"] = f"<reply.{new_id().replace('-', 'x').replace('_', 'y')}@customer.example>"
    message["Date"] = format_datetime(utcnow())
    quoted = "\n".join("> " + line for line in mail.text_body.splitlines())
    sender = mail.headers.get("From", "")
    message.set_content(f"{text.strip()}\n\nOn {mail.headers.get('Date', '')}, {sender} wrote:\n{quoted}\n")
    return message.as_bytes()

"""The one inbound parser: every reply — from the SMTP listener, a provider's hook or the dev outbox's
"reply as the customer" form — comes through `Inbound.receive`.

The mail is kept whole (raw bytes, viewable by agents); what goes into the chat is the reply alone, its
quoted history and signature stripped by `mail-parser-reply`. Auto-replies (Auto-Submitted, Precedence
bulk/junk/list/auto_reply, X-Loop of ours, out-of-office subjects) are recorded and never answered, so two
robots cannot loop. A sender that is not the customer's address is held for an agent, never posted.
"""

from __future__ import annotations

import hashlib
import html
import logging
import re
from dataclasses import dataclass, field
from datetime import timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses, parseaddr
from typing import Any

from mailparser_reply import EmailReplyParser
from sqlalchemy import func, select
from sqlmodel import col

from nameplate.chat.conversations import Conversations
from nameplate.errors import NameplateError
from nameplate.mail.compose import header_text
from nameplate.mail.tokens import BadToken, ReplyTokens
from nameplate.protocol.vocabulary import ErrorCode
from nameplate.routing.router import Router
from nameplate.store.engine import Sessions
from nameplate.store.message_log.log import NewMessage
from nameplate.store.models import AuthorKind, Conversation, ConversationStatus, Customer, InboundMail, utcnow

log = logging.getLogger("nameplate.mail.inbound")

# A reply with a photo or two fits; the listener refuses bigger mail at DATA (552), the hook with 413.
MAX_INBOUND_BYTES = 10 * 1024 * 1024
# One attachment kept up to this; a bigger one is dropped from the stored copy, with a note in the chat.
MAX_ATTACHMENT_BYTES = 2 * 1024 * 1024
MAX_ATTACHMENTS = 10
# Far above any person's pace of replies; a loop or a flood stops here.
MAX_MAILS_PER_CONVERSATION_PER_HOUR = 30
REPLY_LANGUAGES = ["en", "de", "fr", "es", "it", "nl", "pl", "sv", "pt"]
_OUT_OF_OFFICE = re.compile(
    r"^\s*(auto(matic)?[ -]?reply|auto:|out of (the )?office|abwesenheit|absence|r[ée]ponse automatique|"
    r"vacation|away from)",
    re.IGNORECASE,
)
_TOKEN_IN_ID = re.compile(r"\.([a-z2-7]{1,40}-[0-9a-f]{1,6}-[a-z2-7]{16})@", re.IGNORECASE)
_TAG = re.compile(r"<[^>]+>")
EMAIL_VIA = "email"


@dataclass
class ParsedMail:
    sender: str
    sender_name: str
    subject: str
    message_id: str
    text: str
    reply: str
    auto_reason: str | None
    headers_to: list[str]
    references: list[str]
    attachments: list[dict[str, Any]] = field(default_factory=list)
    stored_raw: bytes = b""


class MalformedMail(Exception):
    pass


def auto_reply_reason(message: EmailMessage) -> str | None:
    """Why this mail is from a robot, or None for a person."""
    auto = str(message.get("Auto-Submitted", "")).strip().lower()
    if auto and auto != "no":
        return f"Auto-Submitted: {header_text(auto, 60)}"
    precedence = str(message.get("Precedence", "")).strip().lower()
    if precedence in ("bulk", "junk", "list", "auto_reply"):
        return f"Precedence: {precedence}"
    for name in message.get_all("X-Loop", []) or []:
        if "nameplate@" in str(name).lower():
            return "X-Loop: one of our own mails came back"
    for name in ("X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress"):
        if message.get(name) is not None and name != "X-Auto-Response-Suppress":
            return f"{name} header"
    if str(message.get("X-Auto-Response-Suppress", "")).strip().lower() in ("all", "oof", "autoreply"):
        return "X-Auto-Response-Suppress"
    if _OUT_OF_OFFICE.match(str(message.get("Subject", ""))):
        return "out-of-office subject"
    return None


def _text_of(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain", "html"))
    if body is None:
        return ""
    try:
        content = body.get_content()
    except (LookupError, ValueError, AssertionError):
        payload = body.get_payload(decode=True) or b""
        content = payload.decode("utf-8", errors="replace") if isinstance(payload, bytes) else str(payload)
    if not isinstance(content, str):
        return ""
    if body.get_content_type() == "text/html":
        content = re.sub(r"(?is)<(script|style)[^>]*>.*?</\1>", "", content)
        content = re.sub(r"(?i)<br\s*/?>|</p>|</div>", "\n", content)
        content = html.unescape(_TAG.sub("", content))
    return content.replace("\r\n", "\n")


def _attachments(message: EmailMessage) -> tuple[list[dict[str, Any]], bool]:
    """What was attached, and whether any part was dropped from the stored copy (over the cap)."""
    found: list[dict[str, Any]] = []
    changed = False
    for part in message.iter_attachments():
        payload = part.get_payload(decode=True) or b""
        size = len(payload) if isinstance(payload, bytes) else 0
        name = header_text(part.get_filename() or "attachment", 120)
        kept = size <= MAX_ATTACHMENT_BYTES and len(found) < MAX_ATTACHMENTS
        found.append({"filename": name, "content_type": part.get_content_type(), "size": size, "kept": kept})
        if not kept:
            part.set_content(f"[{name}: {size} bytes, over the {MAX_ATTACHMENT_BYTES} byte limit; not kept]")
            changed = True
    return found, changed


def parse(raw: bytes) -> ParsedMail:
    """Parse one RFC 822 mail; MalformedMail when it has no usable sender or body structure."""
    if len(raw) > MAX_INBOUND_BYTES:
        raise MalformedMail(f"mail is over the {MAX_INBOUND_BYTES // 2**20} MB limit")
    try:
        message = BytesParser(policy=policy.default).parsebytes(raw)
        name, sender = parseaddr(str(message.get("From", "")))
    except Exception as exc:  # the email package raises many kinds on broken input
        raise MalformedMail(f"unreadable mail: {type(exc).__name__}") from exc
    if not isinstance(message, EmailMessage) or "@" not in sender:
        raise MalformedMail("the mail has no valid From address")
    try:
        text = _text_of(message)
        attachments, changed = _attachments(message)
    except Exception as exc:
        raise MalformedMail(f"unreadable MIME structure: {type(exc).__name__}") from exc
    stored = raw
    if changed:
        try:
            stored = message.as_bytes()
        except Exception:
            stored = raw
    try:
        reply = EmailReplyParser(languages=REPLY_LANGUAGES).parse_reply(text=text) or ""
    except Exception:  # the library is heuristics; a failure keeps the whole text rather than losing it
        reply = text
    recipients = [
        a for _, a in getaddresses([str(v) for n in ("To", "Cc", "Delivered-To") for v in message.get_all(n, [])])
    ]
    references = " ".join(str(message.get(n, "")) for n in ("In-Reply-To", "References")).split()
    return ParsedMail(
        sender=sender.strip().lower(),
        sender_name=header_text(name, 100),
        subject=header_text(str(message.get("Subject", "")), 300),
        message_id=header_text(str(message.get("Message-ID", "")), 300),
        text=text,
        reply=reply.strip(),
        auto_reason=auto_reply_reason(message),
        headers_to=recipients,
        references=references,
        attachments=attachments,
        stored_raw=stored,
    )


class Inbound:
    def __init__(
        self,
        sessions: Sessions,
        tokens: ReplyTokens,
        conversations: Conversations,
        router: Router,
        max_chars: int,
    ) -> None:
        self._sessions = sessions
        self._tokens = tokens
        self._conversations = conversations
        self._router = router
        self._max_chars = max_chars

    def check_recipient(self, address: str) -> str:
        """RCPT: the conversation a `reply+<token>@` address names; BadToken for any other address."""
        token = self._tokens.from_address(address)
        if token is None:
            raise BadToken("only reply+<token>@ addresses receive mail here")
        return self._tokens.read(token).conversation_id

    def _conversation_id(self, parsed: ParsedMail, recipients: list[str]) -> str:
        """From the envelope (or To/Cc) reply address; else a Message-ID of ours in In-Reply-To/References."""
        error: BadToken | None = None
        for address in [*recipients, *parsed.headers_to]:
            try:
                return self.check_recipient(address)
            except BadToken as exc:
                error = error or exc
        for reference in parsed.references:
            match = _TOKEN_IN_ID.search(reference)
            if match:
                try:
                    return self._tokens.read(match.group(1)).conversation_id
                except BadToken as exc:
                    error = exc
        raise error or BadToken("no reply address")

    async def _recent_count(self, conversation_id: str) -> int:
        since = utcnow() - timedelta(hours=1)
        async with self._sessions() as session:
            return (
                await session.execute(
                    select(func.count())
                    .select_from(InboundMail)
                    .where(col(InboundMail.conversation_id) == conversation_id, col(InboundMail.created_at) >= since)
                )
            ).scalar_one()

    async def _record(self, mail: InboundMail) -> InboundMail:
        """Insert, or update the same row (a held mail released later keeps its id)."""
        async with self._sessions() as session:
            await session.merge(mail)
            await session.commit()
        return mail

    async def receive(self, raw: bytes, recipients: list[str] | None = None) -> InboundMail:
        """Take one mail. Refused mail is still recorded (nothing lost) and raises NameplateError."""
        try:
            parsed = parse(raw)
        except MalformedMail as exc:
            await self._record(InboundMail(status="refused", reason=str(exc)[:500], raw=raw[:MAX_INBOUND_BYTES]))
            code = "too_large" if "limit" in str(exc) else "malformed"
            raise NameplateError(ErrorCode(code), str(exc), 413 if code == "too_large" else 422) from exc
        record = InboundMail(
            from_address=parsed.sender[:254],
            subject=parsed.subject,
            message_id=parsed.message_id,
            attachments=parsed.attachments,
            raw=parsed.stored_raw,
            body="",
            status="refused",
        )
        try:
            conversation_id = self._conversation_id(parsed, recipients or [])
        except BadToken as exc:
            record.reason = str(exc)
            await self._record(record)
            raise NameplateError(ErrorCode.bad_token, str(exc), 404) from exc
        async with self._sessions() as session:
            conversation = await session.get(Conversation, conversation_id)
            customer = await session.get(Customer, conversation.customer_id) if conversation else None
        if conversation is None or customer is None:
            record.reason = "the conversation no longer exists"
            await self._record(record)
            raise NameplateError(ErrorCode.bad_token, record.reason, 404)
        record.site_id, record.conversation_id = conversation.site_id, conversation.id
        if await self._recent_count(conversation.id) >= MAX_MAILS_PER_CONVERSATION_PER_HOUR:
            # A valid reply address is no licence to flood a conversation; the sender's server retries later.
            raise NameplateError(ErrorCode.rate_limited, "too many mails for this conversation; try again later", 429)
        if parsed.auto_reason:
            record.status, record.reason = "auto_reply", parsed.auto_reason
            return await self._record(record)
        body = self._chat_body(parsed)
        record.body = body
        expected = {a.lower() for a in (conversation.offline_email, customer.email) if a}
        if parsed.sender not in expected:
            record.status = "held"
            record.reason = f"sent from {parsed.sender}, not the customer's address"
            await self._record(record)
            await self._conversations.system_line(
                conversation.id,
                f"An e-mail reply from {parsed.sender} is held: it is not the customer's address. "
                f"Open the outbox to read it (/console/mail/inbound/{record.id}).",
                private=True,
            )
            return record
        return await self._post(record, conversation, customer, parsed, body)

    def _chat_body(self, parsed: ParsedMail) -> str:
        body = parsed.reply or parsed.text.strip() or "(an empty e-mail)"
        notes = []
        for item in parsed.attachments:
            state = "kept with the e-mail" if item["kept"] else "too large, not kept"
            notes.append(f"[attachment: {item['filename']}, {item['size'] // 1024 + 1} KB — {state}]")
        if notes:
            body += "\n\n" + "\n".join(notes)
        if len(body) > self._max_chars:
            suffix = "\n… (cut short; the whole e-mail is kept)"
            body = body[: self._max_chars - len(suffix)] + suffix
        return body

    async def _post(
        self, record: InboundMail, conversation: Conversation, customer: Customer, parsed: ParsedMail, body: str
    ) -> InboundMail:
        target = conversation
        follow_up = conversation.status == ConversationStatus.closed.value
        if follow_up:
            # A closed chat stays closed (its rating and reports stand); the reply opens a linked follow-up,
            # queued for the customer's previous agent first (the router's concierge rule).
            target = await self._conversations.start(conversation.site_id, customer.id, conversation.team_id)
            await self._conversations.set_offline_email(target.id, parsed.sender)
            await self._conversations.system_line(
                target.id, f"Follow-up by e-mail to conversation {conversation.id} (closed)."
            )
        # The Message-ID names the mail: a provider's retry of the same mail is stored once.
        key = hashlib.sha256((parsed.message_id or body).encode()).hexdigest()[:40]
        author = {**Conversations.visitor_author(customer), "via": EMAIL_VIA}
        stored = await self._conversations.post(
            NewMessage(target.id, AuthorKind.visitor.value, body, client_id=f"mail:{key}"),
            author,
            target.site_id,
        )
        record.conversation_id, record.seq, record.status = target.id, stored.seq, "posted"
        if follow_up:
            record.reason = f"follow-up to closed conversation {conversation.id}"
        await self._record(record)
        if follow_up:
            fresh = await self._conversations.get(target.id)
            if fresh is not None:
                await self._router.enqueue(fresh)
        return record

    async def get(self, site_id: str, mail_id: str) -> InboundMail | None:
        async with self._sessions() as session:
            mail = await session.get(InboundMail, mail_id)
        return mail if mail is not None and mail.site_id == site_id else None

    async def for_site(self, site_id: str, limit: int = 200) -> list[InboundMail]:
        async with self._sessions() as session:
            result = await session.execute(
                select(InboundMail)
                .where(col(InboundMail.site_id) == site_id)
                .order_by(col(InboundMail.created_at).desc())
                .limit(limit)
            )
            return list(result.scalars())

    async def release_held(self, site_id: str, mail_id: str) -> InboundMail:
        """An agent read a held mail and decided it belongs in the chat."""
        mail = await self.get(site_id, mail_id)
        if mail is None:
            raise NameplateError(ErrorCode.not_found, "no such e-mail", 404)
        if mail.status != "held":
            raise NameplateError(ErrorCode.not_held, "this e-mail is not held", 409)
        parsed = parse(mail.raw)
        async with self._sessions() as session:
            conversation = await session.get(Conversation, mail.conversation_id)
            customer = await session.get(Customer, conversation.customer_id) if conversation else None
        if conversation is None or customer is None:
            raise NameplateError(ErrorCode.not_found, "the conversation no longer exists", 404)
        mail.reason = f"released by an agent ({mail.reason})"[:500]
        return await self._post(mail, conversation, customer, parsed, mail.body)

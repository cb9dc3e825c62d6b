"""Supervisor insight's mails through the e-mail outbox: insight's `Outbox` (`nameplate.insight.mailing`)
implemented with `compose` and the durable outbox.

The follow-up to a visitor who gave up carries its conversation: a signed reply token, so the visitor's
answer threads back into that conversation through the inbound path like any other reply, and From the
chosen person's full name at the site's sending address (never their own address: DMARC wants the site's
domain). A digest goes to a supervisor about no conversation: From the site, no reply token.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from nameplate.errors import NotFound
from nameplate.insight.mailing import OutgoingMail
from nameplate.mail.compose import compose
from nameplate.mail.outbox import Outbox
from nameplate.mail.site_settings import SiteMailSettings
from nameplate.mail.tokens import ReplyTokens
from nameplate.people.directory import Directory
from nameplate.store.models import OutboxMail


class InsightMail:
    def __init__(
        self,
        outbox: Outbox,
        tokens: ReplyTokens,
        site_settings: SiteMailSettings,
        directory: Directory,
        public_url: str | None,
    ) -> None:
        self._outbox = outbox
        self._tokens = tokens
        self._site_settings = site_settings
        self._directory = directory
        self._public_url = public_url

    async def row(self, mail: OutgoingMail) -> OutboxMail:
        """The outbox row for one of insight's mails, every header fixed now."""
        site = await self._directory.site(mail.site_id)
        sender = await self._site_settings.sender(site)
        agent = await self._directory.agent(mail.agent_id) if mail.agent_id else None
        if agent is not None and agent.site_id != mail.site_id:
            raise NotFound("no such colleague")
        token = self._tokens.issue(mail.conversation_id) if mail.conversation_id else None
        previous = await self._outbox.last_message_id(mail.conversation_id) if mail.conversation_id else None
        link = f"{self._public_url}/mail/c/{token}" if token and self._public_url else None
        return compose(
            sender=sender,
            site_id=mail.site_id,
            conversation_id=mail.conversation_id,
            token=token,
            kind=mail.category[:20],
            to_address=mail.to,
            to_name=mail.to_name,
            subject=mail.subject,
            agent=agent,
            intro=mail.text,
            link=link,
            previous_message_id=previous,
            public_url=self._public_url,
        )

    async def add(self, session: AsyncSession, mail: OutgoingMail) -> None:
        """Into the caller's transaction: the row exists exactly when what caused it does."""
        self._outbox.add(session, await self.row(mail))

    def wake(self) -> None:
        self._outbox.wake()

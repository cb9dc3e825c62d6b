"""The mail domain as the rest of the server sees it: one object per process, built from Settings."""

from __future__ import annotations

from nameplate.chat.conversations import Conversations
from nameplate.config import Settings
from nameplate.mail.followup import FollowUps
from nameplate.mail.inbound import Inbound
from nameplate.mail.insight_mail import InsightMail
from nameplate.mail.listener import Listener
from nameplate.mail.outbox import Outbox, Transport
from nameplate.mail.site_settings import SiteMailSettings
from nameplate.mail.smtp import DevTransport, SmtpTransport, parse_smtp_url
from nameplate.mail.tokens import ReplyTokens
from nameplate.people.directory import Directory
from nameplate.routing.router import Router
from nameplate.store.engine import Sessions


def transport_for(settings: Settings) -> Transport:
    return SmtpTransport(parse_smtp_url(settings.smtp_url)) if settings.smtp_url else DevTransport()


class Mail:
    def __init__(
        self,
        settings: Settings,
        sessions: Sessions,
        conversations: Conversations,
        router: Router,
        directory: Directory,
    ) -> None:
        self.tokens = ReplyTokens(settings.secret_key)
        self.outbox = Outbox(sessions, transport_for(settings), settings.mail_retry_base_seconds)
        self.site_settings = SiteMailSettings(sessions, settings.public_url)
        self.inbound = Inbound(sessions, self.tokens, conversations, router, settings.max_message_chars)
        self.followups = FollowUps(
            sessions,
            self.outbox,
            self.tokens,
            self.site_settings,
            conversations,
            directory,
            settings.public_url,
            settings.mail_unread_delay_seconds,
            settings.mail_rating_delay_seconds,
        )
        self.outbox.before_pass.append(self.followups.sweep)
        # Supervisor insight's follow-ups and digests (`Insight(outbox=...)`, see nameplate.services).
        self.insight = InsightMail(self.outbox, self.tokens, self.site_settings, directory, settings.public_url)
        self.hook_secret = settings.inbound_hook_secret
        self.listener = (
            Listener(self.inbound, settings.inbound_smtp_host, settings.inbound_smtp_port)
            if settings.inbound_smtp_port
            else None
        )

    @property
    def dev_outbox(self) -> bool:
        return isinstance(self.outbox.transport, DevTransport)

    async def start(self) -> None:
        self.outbox.start()
        if self.listener is not None:
            await self.listener.start()

    async def stop(self) -> None:
        if self.listener is not None:
            await self.listener.stop()
        await self.outbox.stop()

"""The outbound transport: `SMTP_URL` parsed once, each mail handed to aiosmtplib.

smtp://user:pass@host:587            STARTTLS when the server offers it (aiosmtplib's default)
smtp://host:587?starttls=require     STARTTLS or fail: never send a password in the clear
smtp://host:25?starttls=off          plain (a local relay)
smtps://user:pass@host:465           TLS from the first byte
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import EmailMessage
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

SEND_TIMEOUT_SECONDS = 30.0


class SmtpUrlError(ValueError):
    pass


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    use_tls: bool = False
    # None: use STARTTLS if offered; True: require it; False: never.
    start_tls: bool | None = None


def parse_smtp_url(url: str) -> SmtpTarget:
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps"):
        raise SmtpUrlError(f"SMTP_URL must start with smtp:// or smtps://, got {parts.scheme or url!r}")
    if not parts.hostname:
        raise SmtpUrlError("SMTP_URL needs a host")
    use_tls = parts.scheme == "smtps"
    try:
        port = parts.port or (465 if use_tls else 587)
    except ValueError as exc:
        raise SmtpUrlError(f"SMTP_URL has a bad port: {exc}") from exc
    mode = (parse_qs(parts.query).get("starttls") or ["auto"])[0].lower()
    if mode not in ("auto", "require", "off"):
        raise SmtpUrlError("SMTP_URL's starttls= must be auto, require or off")
    start_tls = None if mode == "auto" else mode == "require"
    if use_tls:
        start_tls = False
    return SmtpTarget(
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        use_tls=use_tls,
        start_tls=start_tls,
    )


class SmtpTransport:
    name = "smtp"

    def __init__(self, target: SmtpTarget, timeout: float = SEND_TIMEOUT_SECONDS) -> None:
        self.target = target
        self.timeout = timeout

    async def send(self, message: EmailMessage) -> None:
        target = self.target
        await aiosmtplib.send(
            message,
            hostname=target.host,
            port=target.port,
            username=target.username,
            password=target.password,
            use_tls=target.use_tls,
            start_tls=target.start_tls,
            timeout=self.timeout,
        )


class DevTransport:
    """No SMTP_URL: the outbox row is the delivery; admins read it in the console."""

    name = "dev"

    async def send(self, message: EmailMessage) -> None:
        return None

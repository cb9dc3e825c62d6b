"""The SMTP listener for replies (aiosmtpd), in the server's own event loop.

`nameplate serve` starts it when INBOUND_SMTP_PORT is set; point the inbound domain's MX at it. Only
`reply+<token>@` recipients with a valid token are accepted — anything else is refused at RCPT (550), so
the listener is no relay and no spam sink — and mail over the size cap is refused at DATA (552). Every
process may listen on the same port (SO_REUSEPORT): the kernel spreads connections among them.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from nameplate.errors import NameplateError
from nameplate.mail.inbound import MAX_INBOUND_BYTES, Inbound
from nameplate.mail.tokens import BadToken

log = logging.getLogger("nameplate.mail.listener")

MAX_RECIPIENTS = 5


class ReplyHandler:
    def __init__(self, inbound: Inbound) -> None:
        self._inbound = inbound

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        try:
            self._inbound.check_recipient(address)
        except BadToken as exc:
            return f"550 5.1.1 {exc}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", errors="surrogateescape")
        try:
            mail = await self._inbound.receive(raw, list(envelope.rcpt_tos))
        except NameplateError as exc:
            code = {"too_large": "552 5.3.4", "rate_limited": "451 4.7.1"}.get(exc.code, "550 5.6.0")
            return f"{code} {exc.message}"
        except Exception:
            log.exception("inbound mail failed")
            return "451 4.3.0 Temporary failure, try again later"
        return f"250 OK {mail.status}"


class Listener:
    def __init__(self, inbound: Inbound, host: str, port: int) -> None:
        self._handler = ReplyHandler(inbound)
        self.host = host
        self.port = port
        self._server: asyncio.AbstractServer | None = None

    def _protocol(self) -> Any:
        return SMTP(
            self._handler,
            data_size_limit=MAX_INBOUND_BYTES,
            hostname="nameplate",
            ident="Nameplate reply listener",
            timeout=60,
        )

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        reuse = hasattr(socket, "SO_REUSEPORT")
        self._server = await loop.create_server(self._protocol, self.host, self.port, reuse_port=reuse or None)
        log.info("inbound SMTP listener on %s:%s", self.host, self.port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

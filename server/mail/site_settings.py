"""Per-site e-mail settings: the sending address (its domain is the site's, for SPF/DKIM/DMARC alignment)
and the inbound domain whose MX leads to the listener. Edited by the site's admins."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from nameplate.errors import NameplateError
from nameplate.mail.compose import Sender
from nameplate.protocol.vocabulary import ErrorCode
from nameplate.store.engine import Sessions
from nameplate.store.models import Site, SiteMail, utcnow

_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
_LOCAL = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}$")


def clean_domain(value: str) -> str:
    domain = value.strip().lower().rstrip(".")
    if not _DOMAIN.match(domain):
        raise NameplateError(ErrorCode.invalid, "the inbound domain must be a host name like reply.example.com", 422)
    return domain


def clean_address(value: str, what: str = "the sending address") -> str:
    address = value.strip().lower()
    local, _, domain = address.partition("@")
    message = f"{what} must look like name@example.com"
    if not _LOCAL.match(local) or not _DOMAIN.match(domain.rstrip(".")) or "." not in domain:
        raise NameplateError(ErrorCode.invalid, message, 422)
    return f"{local}@{domain.rstrip('.')}"


class SiteMailSettings:
    def __init__(self, sessions: Sessions, public_url: str | None) -> None:
        self._sessions = sessions
        host = urlsplit(public_url).hostname if public_url else None
        self._default_host = host or "localhost"

    async def get(self, site_id: str) -> SiteMail:
        async with self._sessions() as session:
            stored = await session.get(SiteMail, site_id)
        if stored is not None:
            return stored
        return SiteMail(
            site_id=site_id, from_address=f"support@{self._default_host}", inbound_domain=self._default_host
        )

    async def sender(self, site: Site) -> Sender:
        settings = await self.get(site.id)
        return Sender(site_name=site.name, from_address=settings.from_address, inbound_domain=settings.inbound_domain)

    async def update(self, site_id: str, from_address: str, inbound_domain: str) -> SiteMail:
        address, domain = clean_address(from_address), clean_domain(inbound_domain)
        async with self._sessions() as session:
            stored = await session.get(SiteMail, site_id)
            if stored is None:
                stored = SiteMail(site_id=site_id, from_address=address, inbound_domain=domain)
                session.add(stored)
            else:
                stored.from_address, stored.inbound_domain, stored.updated_at = address, domain, utcnow()
            await session.commit()
            await session.refresh(stored)
        return stored

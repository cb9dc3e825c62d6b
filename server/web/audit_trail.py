"""`audit`: the one call an endpoint makes to append an audit entry, with the request's address."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from nameplate.protocol.vocabulary import AuditAction
from nameplate.services import Services
from nameplate.store.models import Agent


def address_of(connection: HTTPConnection) -> str:
    """The peer's address as the server sees it (behind a proxy, the proxy's)."""
    return connection.client.host if connection.client else ""


async def audit(
    connection: HTTPConnection, actor: Agent, action: AuditAction, target: str = "", details: str = ""
) -> None:
    services: Services = connection.app.state.services
    await services.audit.record(actor.site_id, actor, action, target, details, address_of(connection))

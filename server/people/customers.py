"""Customers: the one record widget and console share — identity, context (pages, locale), history."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlmodel import col

from nameplate.people.credentials import VisitorTokens
from nameplate.store.engine import Sessions
from nameplate.store.models import Customer, PageView, Site, iso, utcnow
from nameplate.store.views import CustomerView

# Pages shown to the agent for "this visit": enough to see the path, not a full clickstream.
RECENT_PAGES = 20


def customer_card(customer: Customer) -> dict[str, Any]:
    """What agents see of a customer. Everything in it was typed by someone else: render as text."""
    return {
        "id": customer.id,
        "name": customer.name,
        "email": customer.email,
        "verified": customer.verified,
        "external_id": customer.external_id if customer.verified else None,
        "attributes": customer.attributes,
        "current_url": customer.current_url,
        "current_title": customer.current_title,
        "locale": customer.locale,
        "timezone": customer.timezone,
        "last_seen_at": iso(customer.last_seen_at),
    }


def display_name(customer: Customer | CustomerView) -> str:
    return customer.name or "Visitor"


class Customers:
    def __init__(self, sessions: Sessions, tokens: VisitorTokens) -> None:
        self._sessions = sessions
        self._tokens = tokens

    async def create_visitor(self, site: Site) -> tuple[Customer, str]:
        """A new anonymous customer and the signed token the widget keeps."""
        customer = Customer(site_id=site.id)
        async with self._sessions() as session:
            session.add(customer)
            await session.commit()
        return customer, self._tokens.issue(site.id, customer.id)

    async def from_token(self, site: Site, token: str) -> Customer | None:
        """The customer a token belongs to, following merges; None for a forged or foreign token."""
        claims = self._tokens.read(token)
        if claims is None or claims.site_id != site.id:
            return None
        async with self._sessions() as session:
            customer = await session.get(Customer, claims.customer_id)
            # An anonymous record folded into a verified one keeps working through its pointer.
            for _ in range(3):
                if customer is None or customer.merged_into is None:
                    break
                customer = await session.get(Customer, customer.merged_into)
        if customer is None or customer.site_id != site.id:
            return None
        return customer

    async def get(self, customer_id: str) -> Customer | None:
        async with self._sessions() as session:
            return await session.get(Customer, customer_id)

    async def seen(self, customer_id: str, locale: str | None, timezone: str | None) -> None:
        values: dict[str, Any] = {"last_seen_at": utcnow()}
        if locale:
            values["locale"] = locale
        if timezone:
            values["timezone"] = timezone
        async with self._sessions() as session:
            await session.execute(update(Customer).where(col(Customer.id) == customer_id).values(**values))
            await session.commit()

    async def record_page(self, customer_id: str, url: str, title: str) -> None:
        async with self._sessions() as session:
            session.add(PageView(customer_id=customer_id, url=url, title=title))
            await session.execute(
                update(Customer)
                .where(col(Customer.id) == customer_id)
                .values(current_url=url, current_title=title, last_seen_at=utcnow())
            )
            await session.commit()

    async def recent_pages(self, customer_id: str) -> list[dict[str, Any]]:
        async with self._sessions() as session:
            result = await session.execute(
                select(PageView)
                .where(col(PageView.customer_id) == customer_id)
                .order_by(col(PageView.viewed_at).desc(), col(PageView.id).desc())
                .limit(RECENT_PAGES)
            )
            return [{"url": p.url, "title": p.title, "at": iso(p.viewed_at)} for p in result.scalars()]

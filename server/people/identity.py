"""Identify: link a visitor to the website's signed-in user, verified by HMAC, without ever leaking.

- Verified (user_hash = HMAC-SHA256(site secret, user_id) matches): the visitor becomes that customer.
  An anonymous record is merged into it (its conversations, the open one included, move over), so a
  visitor who signs in mid-chat keeps talking in the same conversation.
- Not verified: never linked to anyone. The details are kept on an anonymous record marked unverified;
  if the current record is a verified customer, a fresh anonymous one is used instead. A site that
  requires verification refuses unverified identify calls.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from nameplate.errors import NameplateError
from nameplate.people.credentials import VisitorTokens, identity_verified
from nameplate.protocol.vocabulary import ErrorCode
from nameplate.store.engine import Sessions
from nameplate.store.models import Conversation, Customer, PageView, Site, utcnow
from nameplate.store.views import CustomerView

MAX_ATTRIBUTES = 50
MAX_ATTRIBUTE_VALUE_CHARS = 1024
ATTRIBUTE_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,39}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def clean_attributes(attributes: Any, current: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate and merge attributes: string/number/bool values (dates as ISO strings), null removes."""
    if attributes is None:
        return dict(current or {})
    if not isinstance(attributes, dict):
        raise NameplateError(ErrorCode.invalid_attributes, "attributes must be an object of key → value")
    merged = dict(current or {})
    for key, value in attributes.items():
        if not isinstance(key, str) or not ATTRIBUTE_KEY.match(key):
            raise NameplateError(
                ErrorCode.invalid_attributes,
                f"attribute key {str(key)[:40]!r} must start with a letter and use letters, digits, _ . - "
                "(40 characters at most)",
            )
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, bool | int):
            merged[key] = value
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise NameplateError(ErrorCode.invalid_attributes, f"attribute {key!r} must be a finite number")
            merged[key] = value
        elif isinstance(value, str):
            if len(value) > MAX_ATTRIBUTE_VALUE_CHARS:
                raise NameplateError(
                    ErrorCode.invalid_attributes,
                    f"attribute {key!r} is longer than {MAX_ATTRIBUTE_VALUE_CHARS} characters",
                )
            merged[key] = value
        else:
            raise NameplateError(
                ErrorCode.invalid_attributes, f"attribute {key!r} must be a string, number, boolean or date string"
            )
    if len(merged) > MAX_ATTRIBUTES:
        raise NameplateError(ErrorCode.invalid_attributes, f"at most {MAX_ATTRIBUTES} attributes per customer")
    return merged


@dataclass(frozen=True)
class IdentifyRequest:
    user_id: str | None
    user_hash: str | None
    name: str | None
    email: str | None
    attributes: dict[str, Any] | None


@dataclass(frozen=True)
class IdentifyResult:
    customer: Customer
    # Set when the visitor's record changed: the widget stores this token from now on.
    new_token: str | None
    verified: bool


def _clean_profile(request: IdentifyRequest) -> tuple[str | None, str | None]:
    name = " ".join((request.name or "").split())[:200] or None
    email = (request.email or "").strip()[:254] or None
    if email is not None and not EMAIL.match(email):
        raise NameplateError(ErrorCode.invalid_email, "email is not a valid e-mail address")
    return name, email


class Identity:
    def __init__(self, sessions: Sessions, tokens: VisitorTokens) -> None:
        self._sessions = sessions
        self._tokens = tokens

    async def identify(self, site: Site, current: Customer | CustomerView, request: IdentifyRequest) -> IdentifyResult:
        name, email = _clean_profile(request)
        user_id = (request.user_id or "").strip()[:200] or None
        verified = bool(user_id) and identity_verified(site.secret, user_id or "", request.user_hash)
        if not verified and site.require_verification:
            raise NameplateError(
                ErrorCode.verification_required, "this site only accepts verified identities (user_hash)", 403
            )
        if verified:
            assert user_id is not None
            return await self._verified(site, current, user_id, name, email, request.attributes)
        return await self._unverified(site, current, name, email, request.attributes)

    async def _verified(
        self,
        site: Site,
        current: Customer | CustomerView,
        user_id: str,
        name: str | None,
        email: str | None,
        attributes: dict[str, Any] | None,
    ) -> IdentifyResult:
        async with self._sessions() as session:
            existing = (
                await session.execute(
                    select(Customer).where(col(Customer.site_id) == site.id, col(Customer.external_id) == user_id)
                )
            ).scalar_one_or_none()
            me = await session.get(Customer, current.id)
            assert me is not None
            if existing is None and not me.verified:
                # The anonymous record becomes the customer: same id, same token, history kept.
                target = me
                target.external_id = user_id
                target.verified = True
            elif existing is None:
                target = Customer(site_id=site.id, external_id=user_id, verified=True)
                session.add(target)
            else:
                target = existing
            self._apply(target, name, email, attributes)
            target.last_seen_at = utcnow()
            if target.id != me.id and not me.verified:
                await self._merge(session, me, target)
            try:
                await session.commit()
            except IntegrityError as exc:
                # Two tabs verified the same new user at once: the other won; use its record.
                raise NameplateError(ErrorCode.conflict, "please retry identify", 409) from exc
        changed = target.id != current.id
        return IdentifyResult(target, self._tokens.issue(site.id, target.id) if changed else None, True)

    async def _unverified(
        self,
        site: Site,
        current: Customer | CustomerView,
        name: str | None,
        email: str | None,
        attributes: dict[str, Any] | None,
    ) -> IdentifyResult:
        async with self._sessions() as session:
            if current.verified:
                # Someone unverified on a verified customer's browser: never write into that record.
                target = Customer(site_id=site.id)
                session.add(target)
            else:
                loaded = await session.get(Customer, current.id)
                assert loaded is not None
                target = loaded
            self._apply(target, name, email, attributes)
            await session.commit()
        changed = target.id != current.id
        return IdentifyResult(target, self._tokens.issue(site.id, target.id) if changed else None, False)

    @staticmethod
    def _apply(target: Customer, name: str | None, email: str | None, attributes: dict[str, Any] | None) -> None:
        if name:
            target.name = name
        if email:
            target.email = email
        if attributes is not None:
            target.attributes = clean_attributes(attributes, target.attributes)

    @staticmethod
    async def _merge(session: Any, anonymous: Customer, into: Customer) -> None:
        """Fold an anonymous record into a verified one: its conversations and pages move over."""
        await session.execute(
            update(Conversation).where(col(Conversation.customer_id) == anonymous.id).values(customer_id=into.id)
        )
        await session.execute(
            update(PageView).where(col(PageView.customer_id) == anonymous.id).values(customer_id=into.id)
        )
        if anonymous.attributes:
            into.attributes = {**anonymous.attributes, **(into.attributes or {})}
        into.name = into.name or anonymous.name
        into.email = into.email or anonymous.email
        into.current_url = anonymous.current_url or into.current_url
        into.current_title = anonymous.current_title or into.current_title
        anonymous.merged_into = into.id

"""Canned responses: a site's saved replies, inserted in the console's composer by typing /shortcut."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from nameplate.errors import NameplateError, NotFound
from nameplate.protocol.vocabulary import ErrorCode
from nameplate.store.engine import Sessions, rows_changed
from nameplate.store.models import CannedResponse, iso

MAX_SHORTCUT_CHARS = 40
MAX_BODY_CHARS = 2000
# Letters, digits, "-" and "_": what can follow a "/" in the composer without ambiguity.
SHORTCUT_PATTERN = re.compile(r"[A-Za-z0-9_-]+")


def clean_shortcut(value: str) -> str:
    """The stored form of a shortcut: without a leading "/", lower case; or a NameplateError saying why not."""
    shortcut = value.strip().removeprefix("/").lower()
    if not shortcut:
        raise NameplateError(ErrorCode.invalid, "a shortcut is required")
    if len(shortcut) > MAX_SHORTCUT_CHARS:
        raise NameplateError(ErrorCode.invalid, f"shortcuts are limited to {MAX_SHORTCUT_CHARS} characters")
    if not SHORTCUT_PATTERN.fullmatch(shortcut):
        raise NameplateError(ErrorCode.invalid, "shortcuts may only contain letters, digits, - and _")
    return shortcut


def clean_canned_body(value: str) -> str:
    body = value.strip()
    if not body:
        raise NameplateError(ErrorCode.invalid, "the response text is required")
    if len(body) > MAX_BODY_CHARS:
        raise NameplateError(ErrorCode.invalid, f"responses are limited to {MAX_BODY_CHARS} characters")
    return body


def canned_card(canned: CannedResponse) -> dict[str, Any]:
    return {"id": canned.id, "shortcut": canned.shortcut, "body": canned.body, "created_at": iso(canned.created_at)}


class CannedResponses:
    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    async def for_site(self, site_id: str) -> list[CannedResponse]:
        async with self._sessions() as session:
            result = await session.execute(
                select(CannedResponse)
                .where(col(CannedResponse.site_id) == site_id)
                .order_by(col(CannedResponse.shortcut))
            )
            return list(result.scalars())

    async def create(self, site_id: str, shortcut: str, body: str) -> CannedResponse:
        canned = CannedResponse(site_id=site_id, shortcut=clean_shortcut(shortcut), body=clean_canned_body(body))
        async with self._sessions() as session:
            session.add(canned)
            try:
                await session.commit()
            except IntegrityError as exc:
                raise NameplateError(ErrorCode.exists, f"/{canned.shortcut} already exists", 409) from exc
        return canned

    async def delete(self, site_id: str, canned_id: str) -> None:
        """Delete one of this site's responses; another site's id is 'not found'."""
        async with self._sessions() as session:
            result = await session.execute(
                delete(CannedResponse).where(
                    col(CannedResponse.id) == canned_id, col(CannedResponse.site_id) == site_id
                )
            )
            await session.commit()
        if rows_changed(result) != 1:
            raise NotFound("no such canned response")

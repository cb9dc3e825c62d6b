"""Site API keys for server-to-server calls: random, shown once, stored only as a SHA-256 hash.

A key is 32 random bytes, so a fast hash is enough: there is nothing to guess that argon2 would slow.
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlmodel import col

from nameplate.errors import NameplateError
from nameplate.protocol.vocabulary import ErrorCode
from nameplate.store.engine import Sessions
from nameplate.store.models import ApiKey, Site, utcnow

KEY_PREFIX = "np_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    async def create(self, site_id: str, name: str) -> tuple[ApiKey, str]:
        """Returns the stored record and the key itself, which is never available again."""
        name = " ".join(name.split())[:100]
        if not name:
            raise NameplateError(ErrorCode.invalid, "give the key a name (what uses it)", 422)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        record = ApiKey(site_id=site_id, name=name, prefix=key[:10], key_hash=hash_key(key))
        async with self._sessions() as session:
            session.add(record)
            await session.commit()
        return record, key

    async def revoke(self, site_id: str, key_id: str) -> None:
        async with self._sessions() as session:
            record = await session.get(ApiKey, key_id)
            if record is None or record.site_id != site_id:
                raise NameplateError(ErrorCode.not_found, "no such API key", 404)
            record.revoked_at = record.revoked_at or utcnow()
            await session.commit()

    async def list(self, site_id: str) -> list[ApiKey]:
        async with self._sessions() as session:
            result = await session.execute(
                select(ApiKey).where(col(ApiKey.site_id) == site_id).order_by(col(ApiKey.created_at).desc())
            )
            return list(result.scalars())

    async def site_for(self, key: str | None) -> Site | None:
        """The site a presented key belongs to, or None if it is unknown or revoked."""
        if not key or not key.startswith(KEY_PREFIX) or len(key) > 200:
            return None
        async with self._sessions() as session:
            record = (
                await session.execute(select(ApiKey).where(col(ApiKey.key_hash) == hash_key(key)))
            ).scalar_one_or_none()
            if record is None or record.revoked_at is not None:
                return None
            return await session.get(Site, record.site_id)

"""Credentials: argon2 password hashes, signed visitor tokens, agent session contents, HMAC identity."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadSignature, URLSafeSerializer

_hasher = PasswordHasher()
# Verifying against this keeps the time of a login for an unknown e-mail the same as for a known one.
# Made on first use: hashing at import would slow every process start by a hash.
_dummy_hash: str | None = None

MIN_PASSWORD_LENGTH = 8


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"passwords need at least {MIN_PASSWORD_LENGTH} characters")
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    global _dummy_hash
    if password_hash is None and _dummy_hash is None:
        _dummy_hash = _hasher.hash("nameplate-dummy-password")
    try:
        return _hasher.verify(password_hash or _dummy_hash or "", password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class VisitorClaims:
    site_id: str
    customer_id: str


class VisitorTokens:
    """Tokens the widget keeps in localStorage: signed, so a visitor cannot claim another's record."""

    def __init__(self, secret_key: str) -> None:
        self._serializer = URLSafeSerializer(secret_key, salt="nameplate.visitor")

    def issue(self, site_id: str, customer_id: str) -> str:
        return self._serializer.dumps({"s": site_id, "c": customer_id})

    def read(self, token: str) -> VisitorClaims | None:
        try:
            data = self._serializer.loads(token)
        except BadSignature:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("s"), str) or not isinstance(data.get("c"), str):
            return None
        return VisitorClaims(data["s"], data["c"])


def identity_hash(site_secret: str, user_id: str) -> str:
    """user_hash = HMAC-SHA256(key = site secret, msg = user_id), hex."""
    return hmac.new(site_secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def identity_verified(site_secret: str, user_id: str, user_hash: str | None) -> bool:
    if not user_hash:
        return False
    return hmac.compare_digest(identity_hash(site_secret, user_id), user_hash.lower())


SESSION_AGENT = "agent_id"
SESSION_VERSION = "agent_v"


def session_payload(agent_id: str, session_version: int) -> dict[str, object]:
    return {SESSION_AGENT: agent_id, SESSION_VERSION: session_version}

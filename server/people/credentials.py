"""Credentials: argon2 password hashes, signed visitor tokens, agent session contents, HMAC identity."""

from __future__ import annotations

import hashlib
import hmac
import time
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


# An anonymous visitor's token lasts a month: a returning visitor finds their open chat again.
ANONYMOUS_TOKEN_SECONDS = 30 * 24 * 3600
# A verified customer's token reads their record; the widget renews it with every verified identify
# (each page load of a signed-in user), so a day is plenty and a forgotten shared browser loses it soon.
VERIFIED_TOKEN_SECONDS = 24 * 3600


@dataclass(frozen=True)
class VisitorClaims:
    site_id: str
    customer_id: str
    # True only for tokens minted when a user_hash was checked: an anonymous token never reads a verified
    # record, even one that was this token's own anonymous record before verification (session fixation).
    verified: bool = False
    issued_at: int = 0
    lifetime: int = ANONYMOUS_TOKEN_SECONDS


class VisitorTokens:
    """Tokens the widget keeps in localStorage: signed, so a visitor cannot claim another's record, and
    self-contained (site, customer, verified, issued-at, lifetime), so checking one needs no database."""

    def __init__(
        self,
        secret_key: str,
        anonymous_seconds: int = ANONYMOUS_TOKEN_SECONDS,
        verified_seconds: int = VERIFIED_TOKEN_SECONDS,
    ) -> None:
        self._serializer = URLSafeSerializer(secret_key, salt="nameplate.visitor.v2")
        self.anonymous_seconds = anonymous_seconds
        self.verified_seconds = verified_seconds

    def issue(self, site_id: str, customer_id: str, verified: bool = False, now: float | None = None) -> str:
        lifetime = self.verified_seconds if verified else self.anonymous_seconds
        issued = int(time.time() if now is None else now)
        return self._serializer.dumps({"s": site_id, "c": customer_id, "v": int(verified), "t": issued, "l": lifetime})

    def read(self, token: str, now: float | None = None) -> VisitorClaims | None:
        """The claims of a genuine, unexpired token; None otherwise (the widget then asks for a new one)."""
        try:
            data = self._serializer.loads(token)
        except BadSignature:
            return None
        if not isinstance(data, dict):
            return None
        site, customer, verified = data.get("s"), data.get("c"), data.get("v")
        issued, lifetime = data.get("t"), data.get("l")
        if not isinstance(site, str) or not isinstance(customer, str) or verified not in (0, 1):
            return None
        if not isinstance(issued, int) or not isinstance(lifetime, int) or isinstance(issued, bool):
            return None
        current = time.time() if now is None else now
        # A token from the future beyond clock skew was not made by us in good faith.
        if current >= issued + lifetime or issued > current + 300:
            return None
        return VisitorClaims(site, customer, bool(verified), issued, lifetime)


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

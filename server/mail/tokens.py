"""Signed per-conversation reply tokens: the `<token>` in `reply+<token>@<inbound domain>`.

The token names the conversation and the day it was issued, signed with the server's secret, so a guessed
or edited address is refused and an old one expires. It is lower-case base32 with '-' separators because
mail systems may fold the case of a local part, and it stays under the 64-character local-part limit.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from dataclasses import dataclass

# Three months: long enough to answer a follow-up late, short enough that old mail does not stay a way in.
TOKEN_MAX_AGE_DAYS = 90
_SIGNATURE_BYTES = 10
TOKEN_PATTERN = re.compile(r"^[a-z2-7]{1,40}-[0-9a-f]{1,6}-[a-z2-7]{16}$")
REPLY_ADDRESS = re.compile(r"^reply\+([a-z0-9-]{1,60})@([a-z0-9.-]{1,253})$")


class BadToken(Exception):
    """Unknown, forged or expired: the reason is in the message."""


@dataclass(frozen=True)
class ReplyToken:
    conversation_id: str
    issued_day: int


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode().rstrip("=").lower()


def _unb32(text: str) -> bytes:
    padded = text.upper() + "=" * (-len(text) % 8)
    return base64.b32decode(padded)


class ReplyTokens:
    def __init__(self, secret: str, max_age_days: int = TOKEN_MAX_AGE_DAYS) -> None:
        self._key = hashlib.sha256(b"nameplate mail reply token\0" + secret.encode()).digest()
        self.max_age_days = max_age_days

    def _signature(self, conversation_id: str, day: int) -> str:
        digest = hmac.new(self._key, f"{conversation_id}:{day}".encode(), hashlib.sha256).digest()
        return _b32(digest[:_SIGNATURE_BYTES])

    def issue(self, conversation_id: str, now: float | None = None) -> str:
        day = int((now or time.time()) // 86400)
        return f"{_b32(conversation_id.encode())}-{day:x}-{self._signature(conversation_id, day)}"

    def read(self, token: str, now: float | None = None) -> ReplyToken:
        token = token.strip().lower()
        if not TOKEN_PATTERN.match(token):
            raise BadToken("not a reply address")
        encoded, day_hex, signature = token.split("-")
        try:
            conversation_id = _unb32(encoded).decode()
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadToken("not a reply address") from exc
        day = int(day_hex, 16)
        if not hmac.compare_digest(signature, self._signature(conversation_id, day)):
            raise BadToken("this reply address was not issued here")
        today = int((now or time.time()) // 86400)
        if today - day > self.max_age_days:
            raise BadToken(f"this reply address expired ({self.max_age_days} days)")
        return ReplyToken(conversation_id, day)

    def from_address(self, address: str) -> str | None:
        """The token of a `reply+<token>@domain` address, or None for any other address."""
        match = REPLY_ADDRESS.match(address.strip().strip("<>").lower())
        return match.group(1) if match else None

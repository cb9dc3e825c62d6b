"""One error type for everything a client did wrong: its code goes on the wire as is."""

from __future__ import annotations

from nameplate.protocol.vocabulary import ErrorCode


class NameplateError(Exception):
    """`code` is stable and machine-readable; `message` is for people; `status` is the HTTP status."""

    def __init__(self, code: ErrorCode, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class NotFound(NameplateError):
    def __init__(self, what: str = "not found") -> None:
        super().__init__(ErrorCode.not_found, what, 404)


class Forbidden(NameplateError):
    def __init__(self, message: str = "not allowed") -> None:
        super().__init__(ErrorCode.forbidden, message, 403)


class RateLimited(NameplateError):
    """Too many of something: the client may try again later; a socket that keeps on is closed (4429)."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.rate_limited, message, 429)

"""Rate limits: a per-socket token bucket for chat frames and a shared fixed window for logins."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(slots=True)  # two per open socket: no per-instance dict
class TokenBucket:
    """Allows `burst` frames at once, refilling at `per_second`. Per socket, so no shared state needed."""

    burst: float
    per_second: float
    tokens: float = field(default=-1.0)
    updated: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.burst

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.per_second)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

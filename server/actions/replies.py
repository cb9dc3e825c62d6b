"""What an action may do with the socket that asked: send it frames, in order, corked while it publishes."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol


class Replies(Protocol):
    """The asking socket's outbound queue (`realtime.connection.Connection` is one)."""

    def send(self, frame: dict[str, Any], replayed: bool = False) -> None: ...

    def corked(self) -> AbstractContextManager[None]: ...

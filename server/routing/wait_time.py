"""Honest expected waits: from the agents on duty and how long chats have really been taking."""

from __future__ import annotations

from collections.abc import Iterable

from nameplate.protocol.vocabulary import Presence
from nameplate.routing.plan import AgentState

# With no history yet, assume a chat takes 3 minutes: a common figure for live chat.
DEFAULT_HANDLE_SECONDS = 180.0


def available_count(agents: Iterable[AgentState]) -> int:
    """Agents who can take a chat now. Away is not "online" to a visitor: an Away agent answers no one."""
    return sum(1 for a in agents if a.status == Presence.available)


def expected_wait_seconds(position: int, agents: Iterable[AgentState], handle_seconds: float) -> int | None:
    """Seconds until the visitor at `position` (1-based) is likely to be answered; None when no agent is
    on duty, because any number would be a guess.

    Free slots take the first visitors at once. Past those, every busy slot frees up about once per
    handling time, so the queue moves `slots / handle_seconds` places a second.
    """
    on_duty = [a for a in agents if a.status == Presence.available]
    if not on_duty:
        return None
    slots = sum(a.capacity for a in on_duty)
    if slots <= 0:
        return None
    free = sum(max(0, a.capacity - a.load) for a in on_duty)
    if position <= free:
        return 0
    return round((position - free) * handle_seconds / slots)


def describe_wait(seconds: int | None) -> str:
    """The one sentence for an expected wait that the widget, the console and the live board all show: an
    estimate said as one ("about 4 minutes"), and "in a moment" only when a free agent takes the chat now."""
    if seconds is None:
        return "no one is available to answer yet"
    if seconds <= 0:
        return "someone will be with you in a moment"
    if seconds < 60:
        return "less than a minute"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"about {minutes} minute" + ("s" if minutes > 1 else "")
    return f"about {round(minutes / 60)} hours"


def mean_handle_seconds(durations: list[float]) -> float:
    useful = [d for d in durations if d > 0]
    return sum(useful) / len(useful) if useful else DEFAULT_HANDLE_SECONDS

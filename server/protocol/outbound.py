"""Every server → client frame, built here and nowhere else, so its shape is written down once.

A frame is a plain dict (it is published through the broker as JSON and sent as is). The README's protocol
tables list the same frames and fields; `tests/unit/test_protocol_tables.py` checks the two against each
other. Events that only travel between processes (never to a socket as they are) are at the bottom.
"""

from __future__ import annotations

import json
from typing import Any

from nameplate.protocol.vocabulary import ErrorCode, Side, UnassignReason

Frame = dict[str, Any]


def encode(frame: Frame) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


# -- both sockets --------------------------------------------------------------------------------------
def error(code: ErrorCode, message: str, client_id: str | None = None) -> Frame:
    frame: Frame = {"type": "error", "code": code, "message": message}
    if client_id:
        # Names the message the error is about, so the client can mark that one as failed.
        frame["client_id"] = client_id
    return frame


def ack(client_id: str, seq: int, conversation_id: str) -> Frame:
    return {"type": "ack", "client_id": client_id, "seq": seq, "conversation_id": conversation_id}


def message(
    conversation_id: str,
    seq: int,
    author: dict[str, Any],
    body: str,
    private: bool,
    client_id: str | None,
    sent_at: str | None,
    visibility: str,
) -> Frame:
    """`visibility` (public, note, whisper) says what kind of message it is; `private` is "not for the
    visitor" (notes and whispers), the flag older consoles read."""
    return {
        "type": "message",
        "conversation_id": conversation_id,
        "seq": seq,
        "author": author,
        "body": body,
        "private": private,
        "visibility": visibility,
        "client_id": client_id,
        "sent_at": sent_at,
    }


def typing(conversation_id: str, by: Side, on: bool, name: str | None) -> Frame:
    return {"type": "typing", "conversation_id": conversation_id, "by": by, "name": name, "on": on}


def read(conversation_id: str, by: Side, seq: int) -> Frame:
    return {"type": "read", "conversation_id": conversation_id, "by": by, "seq": seq}


def agent_joined(conversation_id: str, agent: dict[str, Any]) -> Frame:
    return {"type": "agent_joined", "conversation_id": conversation_id, "agent": agent}


def agent_left(conversation_id: str, agent: dict[str, Any]) -> Frame:
    return {"type": "agent_left", "conversation_id": conversation_id, "agent": agent}


def agent_dropped(conversation_id: str, agent: dict[str, Any], grace_s: int, text: str) -> Frame:
    """The agent's last console socket closed: the chat stays theirs for `grace_s` more seconds, then goes
    back to the queue. `text` says so to the visitor (the same words as the system line in the chat)."""
    return {
        "type": "agent_dropped",
        "conversation_id": conversation_id,
        "agent": agent,
        "grace_s": grace_s,
        "text": text,
    }


def agent_back(conversation_id: str, agent: dict[str, Any], text: str) -> Frame:
    """The agent whose connection dropped is back within the grace period: the chat is still theirs."""
    return {"type": "agent_back", "conversation_id": conversation_id, "agent": agent, "text": text}


def transferred_to_agent(conversation_id: str, from_name: str, to_agent: str) -> Frame:
    return {"type": "transferred", "conversation_id": conversation_id, "from": from_name, "to_agent": to_agent}


def transferred_to_team(conversation_id: str, from_name: str, to_team: str) -> Frame:
    return {"type": "transferred", "conversation_id": conversation_id, "from": from_name, "to_team": to_team}


def closed(conversation_id: str, by: str) -> Frame:
    return {"type": "closed", "conversation_id": conversation_id, "by": by}


def pong() -> Frame:
    return {"type": "pong"}


# -- visitor socket ------------------------------------------------------------------------------------
def visitor_welcome(
    customer: dict[str, Any],
    conversation: dict[str, Any] | None,
    agents_online: int,
    teams: list[dict[str, Any]],
    earlier: list[dict[str, Any]],
    token: str | None = None,
) -> Frame:
    frame: Frame = {
        "type": "welcome",
        "customer": customer,
        "conversation": conversation,
        "agents_online": agents_online,
        "teams": teams,
        "earlier": earlier,
    }
    if token is not None:
        frame["token"] = token
    return frame


def queue(
    conversation_id: str, position: int, expected_wait_s: int | None, wait_text: str, agents_online: int
) -> Frame:
    return {
        "type": "queue",
        "conversation_id": conversation_id,
        "position": position,
        "expected_wait_s": expected_wait_s,
        "wait_text": wait_text,
        "agents_online": agents_online,
    }


def offer(conversation_id: str, agent: dict[str, Any], expected_wait_s: int, wait_text: str) -> Frame:
    """`wait_text` is the label of the choice to wait ("Wait for Jane Chang-Katzenberg (about 4 minutes)"),
    worded by routing/wait_time.py like every other wait."""
    return {
        "type": "offer",
        "conversation_id": conversation_id,
        "agent": agent,
        "expected_wait_s": expected_wait_s,
        "wait_text": wait_text,
    }


def agents_online(count: int) -> Frame:
    return {"type": "agents_online", "count": count}


def conversation_started(conversation_id: str) -> Frame:
    return {"type": "conversation_started", "conversation_id": conversation_id}


def identified(
    customer: dict[str, Any],
    conversation_id: str | None,
    token: str | None = None,
    earlier: list[dict[str, Any]] | None = None,
) -> Frame:
    frame: Frame = {"type": "identified", "customer": customer, "conversation_id": conversation_id}
    if token is not None:
        frame["token"] = token
    if earlier is not None:
        frame["earlier"] = earlier
    return frame


def history(conversation_id: str, messages: list[Frame]) -> Frame:
    return {"type": "history", "conversation_id": conversation_id, "messages": messages}


def rated(conversation_id: str, score: int) -> Frame:
    return {"type": "rated", "conversation_id": conversation_id, "score": score}


def email_saved(email: str) -> Frame:
    return {"type": "email_saved", "email": email}


# -- agent socket --------------------------------------------------------------------------------------
def agent_welcome(
    observing: bool,
    agent: dict[str, Any],
    status: str,
    capacity: int,
    conversations: list[dict[str, Any]],
    queue: list[dict[str, Any]],
    teams: list[dict[str, Any]],
    colleagues: list[dict[str, Any]],
) -> Frame:
    return {
        "type": "welcome",
        "observing": observing,
        "agent": agent,
        "status": status,
        "capacity": capacity,
        "conversations": conversations,
        "queue": queue,
        "teams": teams,
        "colleagues": colleagues,
    }


def assigned(conversation: dict[str, Any], note: str | None) -> Frame:
    return {"type": "assigned", "conversation": conversation, "note": note}


def unassigned(conversation_id: str, reason: UnassignReason) -> Frame:
    return {"type": "unassigned", "conversation_id": conversation_id, "reason": reason}


def status(status: str, load: int, capacity: int) -> Frame:
    return {"type": "status", "status": status, "load": load, "capacity": capacity}


def conversation(summary: dict[str, Any]) -> Frame:
    """A conversation as the site's consoles list it now (started, assigned, requeued, closed)."""
    return {"type": "conversation", "conversation": summary}


def board(queue: list[dict[str, Any]], agents: list[dict[str, Any]]) -> Frame:
    return {"type": "board", "queue": queue, "agents": agents}


def watching(conversation: dict[str, Any]) -> Frame:
    return {"type": "watching", "conversation": conversation}


def page(conversation_id: str, customer_id: str, url: str, title: str) -> Frame:
    return {"type": "page", "conversation_id": conversation_id, "customer_id": customer_id, "url": url, "title": title}


def customer_event(conversation_id: str, customer_id: str, event: dict[str, Any]) -> Frame:
    return {"type": "customer_event", "conversation_id": conversation_id, "customer_id": customer_id, "event": event}


def rating(conversation_id: str, score: int, comment: str) -> Frame:
    return {"type": "rating", "conversation_id": conversation_id, "score": score, "comment": comment}


# -- between processes only ----------------------------------------------------------------------------
# These travel on the broker and are turned into something else by the socket that receives them.
def customer_conversation_event(conversation_id: str) -> Frame:
    """On a customer's channel: a conversation of theirs started (the visitor socket sends
    `conversation_started` and follows it)."""
    return {"type": "conversation", "conversation_id": conversation_id}


def session_ended_event() -> Frame:
    """On an agent's channel: their access was revoked (every console socket closes with 4401)."""
    return {"type": "session_ended"}


# The frame types a socket can receive, for the README check; the inner-only events above are not among them.
VISITOR_FRAMES = frozenset(
    {
        "welcome", "ack", "message", "queue", "agents_online", "identified", "offer", "history", "agent_joined",
        "agent_left", "agent_dropped", "agent_back", "transferred", "typing", "read", "closed",
        "conversation_started", "rated", "email_saved", "pong", "error",
    }
)  # fmt: skip
AGENT_FRAMES = frozenset(
    {
        "welcome", "ack", "message", "assigned", "unassigned", "status", "conversation", "board", "page",
        "customer_event", "rating", "watching", "agent_joined", "agent_left", "agent_dropped", "agent_back",
        "transferred", "typing", "read", "closed", "queue", "offer", "pong", "error",
    }
)  # fmt: skip

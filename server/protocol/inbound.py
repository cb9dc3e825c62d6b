"""Every client → server websocket frame as a typed model; parsing and validation happen here and nowhere else.

Client frames are JSON text objects with a "type". `parse_visitor_frame` / `parse_agent_frame` turn text
into a model or raise `ProtocolError` with a code for the `error` frame. Server frames are built in
`nameplate.protocol.outbound`.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from nameplate.errors import NameplateError
from nameplate.protocol.vocabulary import ErrorCode

# Frames larger than this are refused before JSON parsing: a message body is capped far below it.
MAX_FRAME_BYTES = 64 * 1024
# What the websocket server reads of one frame at most (uvicorn's ws_max_size): a frame a little over the
# limit still gets a `too_large` error frame; one beyond this is cut off with 1009 as it arrives, so a
# socket costs at most this much before hello (uvicorn's default, 16 MiB, was read whole).
WS_MAX_SIZE = 2 * MAX_FRAME_BYTES

# Seqs are INTEGER columns (32-bit in PostgreSQL): a larger number is not a real seq, and would crash the
# query that compares it rather than simply match nothing.
MAX_SEQ = 2**31 - 1
Seq = Annotated[int, Field(ge=0, le=MAX_SEQ)]
# JSON escapes of UTF-16 surrogates (\ud800–\udfff): paired they are one character, alone they are text
# no database or encoder accepts.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")

ClientId = Annotated[str, Field(min_length=1, max_length=64)]
ConversationId = Annotated[str, Field(min_length=1, max_length=32)]


class ProtocolError(NameplateError):
    """A frame the server cannot act on. `code` goes on the wire in the `error` frame."""


class Frame(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# -- visitor → server ----------------------------------------------------------------------------------
class IdentifyFields(Frame):
    """What `Nameplate.identify(...)` passes: user_hash = HMAC-SHA256(site secret, user_id), hex."""

    user_id: str | None = Field(default=None, max_length=200)
    user_hash: str | None = Field(default=None, max_length=128)
    name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=254)
    attributes: dict[str, Any] | None = None


class VisitorHello(Frame):
    type: Literal["hello"]
    site: str = Field(min_length=1, max_length=64)
    token: str = Field(min_length=1, max_length=512)
    conversation_id: ConversationId | None = None
    resume_after: Seq = 0
    # The visitor's locale and time zone, from the browser, shown to the agent.
    locale: str | None = Field(default=None, max_length=35)
    timezone: str | None = Field(default=None, max_length=64)
    identify: IdentifyFields | None = None


class Identify(IdentifyFields):
    """Sign in mid-visit: the same fields as hello's `identify`."""

    type: Literal["identify"]


class Choose(Frame):
    """Answer to an `offer`: wait for the previous agent, or take the next available person."""

    type: Literal["choose"]
    wait: bool


class History(Frame):
    """A verified customer asks for one of their earlier conversations."""

    type: Literal["history"]
    conversation_id: ConversationId


class SendMessage(Frame):
    type: Literal["message"]
    client_id: ClientId
    body: str
    # Agents name the conversation; a visitor's message goes to their current conversation.
    conversation_id: ConversationId | None = None
    team_id: str | None = Field(default=None, max_length=32)


class Typing(Frame):
    type: Literal["typing"]
    on: bool
    conversation_id: ConversationId | None = None


class Read(Frame):
    type: Literal["read"]
    seq: Seq
    conversation_id: ConversationId | None = None


class Page(Frame):
    type: Literal["page"]
    url: str = Field(max_length=2000)
    title: str = Field(default="", max_length=300)


class Rate(Frame):
    type: Literal["rate"]
    score: int = Field(ge=1, le=5)
    comment: str = Field(default="", max_length=2000)
    conversation_id: ConversationId | None = None


class OfflineEmail(Frame):
    """No agent online: where the reply should go."""

    type: Literal["email"]
    email: str = Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class Ping(Frame):
    type: Literal["ping"]


# -- agent → server ------------------------------------------------------------------------------------
class AgentHello(Frame):
    type: Literal["hello"]
    # conversation_id → last seq the console has; conversations not named get their full history.
    resume_after: dict[str, Seq] = Field(default_factory=dict, max_length=1000)
    # Supervisors watching the live view: not online for routing, read-only.
    observe: bool = False
    # The status to arrive in; unset, agents arrive available and supervisors and admins away.
    status: Literal["available", "away"] | None = None


class AgentSend(SendMessage):
    conversation_id: ConversationId


class AgentTyping(Typing):
    conversation_id: ConversationId


class AgentRead(Read):
    conversation_id: ConversationId


class Status(Frame):
    type: Literal["status"]
    status: Literal["available", "away"]


class Note(Frame):
    type: Literal["note"]
    conversation_id: ConversationId
    body: str
    client_id: ClientId | None = None


class Transfer(Frame):
    type: Literal["transfer"]
    conversation_id: ConversationId
    to_agent: str | None = Field(default=None, max_length=32)
    to_team: str | None = Field(default=None, max_length=32)
    note: str = Field(default="", max_length=2000)


class Close(Frame):
    type: Literal["close"]
    conversation_id: ConversationId


class Watch(Frame):
    """Open a conversation read-only (supervisors) or stop watching it; replies with its history."""

    type: Literal["watch"]
    conversation_id: ConversationId
    on: bool = True


class Whisper(Frame):
    """A supervisor's word to the agent of a conversation they watch; the visitor never sees it."""

    type: Literal["whisper"]
    conversation_id: ConversationId
    body: str
    client_id: ClientId | None = None


class TakeOver(Frame):
    """A supervisor becomes the conversation's agent."""

    type: Literal["takeover"]
    conversation_id: ConversationId


VisitorFrame = Annotated[
    SendMessage | Typing | Read | Page | Rate | OfflineEmail | Identify | Choose | History | Ping,
    Field(discriminator="type"),
]
AgentFrame = Annotated[
    AgentSend | AgentTyping | AgentRead | Status | Note | Transfer | Close | Watch | Whisper | TakeOver | Ping,
    Field(discriminator="type"),
]
_visitor_hello = TypeAdapter(VisitorHello)
_agent_hello = TypeAdapter(AgentHello)
_visitor_frames: TypeAdapter[Any] = TypeAdapter(VisitorFrame)
_agent_frames: TypeAdapter[Any] = TypeAdapter(AgentFrame)


def reject_nul(text: str | bytes) -> None:
    """PostgreSQL text cannot hold U+0000: refuse it at the door rather than fail a whole write."""
    raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    if "\x00" in raw or "\\u0000" in raw:
        raise ProtocolError(ErrorCode.bad_frame, "NUL characters (U+0000) are not allowed")


def _load(text: str | bytes) -> dict[str, Any]:
    if len(text) > MAX_FRAME_BYTES:
        raise ProtocolError(ErrorCode.too_large, f"frames are limited to {MAX_FRAME_BYTES} bytes")
    reject_nul(text)
    try:
        data = json.loads(text)
    except (ValueError, TypeError) as exc:
        raise ProtocolError(ErrorCode.bad_json, "frames must be JSON objects") from exc
    except RecursionError as exc:
        raise ProtocolError(ErrorCode.bad_json, "frames must not nest that deeply") from exc
    if _SURROGATE_ESCAPE.search(text if isinstance(text, str) else text.decode("utf-8", "replace")):
        _reject_lone_surrogates(data)
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ProtocolError(ErrorCode.bad_frame, 'frames must be JSON objects with a "type"')
    return data


def _reject_lone_surrogates(data: Any) -> None:
    """Only for frames that escape a surrogate: encoding finds a lone one (paired ones were joined by
    the parser)."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ProtocolError(ErrorCode.bad_frame, "text must be valid Unicode (a lone surrogate was sent)") from exc
    except RecursionError as exc:
        raise ProtocolError(ErrorCode.bad_json, "frames must not nest that deeply") from exc


def _validate(adapter: TypeAdapter[Any], data: dict[str, Any]) -> Any:
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "union_tag_invalid":
            raise ProtocolError(ErrorCode.unknown_type, f"unknown frame type {data['type'][:40]!r}") from exc
        where = ".".join(str(part) for part in first["loc"][1:] or first["loc"])
        raise ProtocolError(ErrorCode.bad_frame, f"{data['type'][:40]}: {where}: {first['msg']}") from exc


def parse_visitor_hello(text: str | bytes) -> VisitorHello:
    data = _load(text)
    if data["type"] != "hello":
        raise ProtocolError(ErrorCode.hello_required, "the first frame must be hello")
    hello: VisitorHello = _validate(_visitor_hello, data)
    return hello


def parse_agent_hello(text: str | bytes) -> AgentHello:
    data = _load(text)
    if data["type"] != "hello":
        raise ProtocolError(ErrorCode.hello_required, "the first frame must be hello")
    hello: AgentHello = _validate(_agent_hello, data)
    return hello


def parse_visitor_frame(text: str | bytes) -> Any:
    return _validate(_visitor_frames, _load(text))


def parse_agent_frame(text: str | bytes) -> Any:
    return _validate(_agent_frames, _load(text))

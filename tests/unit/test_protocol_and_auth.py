from __future__ import annotations

import json

import pytest

from nameplate.people.credentials import VisitorTokens, hash_password, identity_hash, identity_verified, verify_password
from nameplate.protocol.inbound import (
    AgentSend,
    ProtocolError,
    SendMessage,
    Status,
    parse_agent_frame,
    parse_visitor_frame,
    parse_visitor_hello,
)


def test_frames_parse_into_their_models() -> None:
    frame = parse_visitor_frame(json.dumps({"type": "message", "client_id": "c1", "body": "hi"}))
    assert isinstance(frame, SendMessage) and frame.body == "hi"
    agent = parse_agent_frame(json.dumps({"type": "message", "conversation_id": "x", "client_id": "c", "body": "b"}))
    assert isinstance(agent, AgentSend)
    assert isinstance(parse_agent_frame('{"type":"status","status":"away"}'), Status)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("nope", "bad_json"),
        ("[1]", "bad_frame"),
        ('{"type": 3}', "bad_frame"),
        ('{"type": "fly"}', "unknown_type"),
        ('{"type": "message", "body": "no id"}', "bad_frame"),
        ('{"type": "status", "status": "asleep"}', "unknown_type"),
    ],
)
def test_bad_frames_raise_protocol_errors_with_codes(text: str, code: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_visitor_frame(text)
    assert caught.value.code == code


def test_agents_must_name_the_conversation() -> None:
    with pytest.raises(ProtocolError):
        parse_agent_frame('{"type": "message", "client_id": "c", "body": "b"}')


def test_hello_must_come_first() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_visitor_hello('{"type": "message", "client_id": "c", "body": "b"}')
    assert caught.value.code == "hello_required"


def test_identity_hash_known_answer() -> None:
    # HMAC-SHA256(key="secret", msg="user-42"), computed independently with openssl:
    # printf 'user-42' | openssl dgst -sha256 -hmac secret
    expected = "e286b7b944100ab478fe553b39122922de0000aee1d04087dc3e96eefc3a8d47"
    computed = identity_hash("secret", "user-42")
    assert computed == expected
    assert identity_verified("secret", "user-42", computed)
    assert identity_verified("secret", "user-42", computed.upper())
    assert not identity_verified("user-42", "secret", computed)  # key and message swapped
    assert not identity_verified("secret", "user-43", computed)
    assert not identity_verified("secret", "user-42", None)
    assert not identity_verified("secret", "user-42", "0" * 64)


def test_visitor_tokens_are_signed() -> None:
    tokens = VisitorTokens("k1")
    token = tokens.issue("site", "customer")
    claims = tokens.read(token)
    assert claims is not None and (claims.site_id, claims.customer_id) == ("site", "customer")
    assert tokens.read(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert VisitorTokens("k2").read(token) is None


def test_passwords_are_argon2_and_verified() -> None:
    hashed = hash_password("correct horse")
    assert hashed.startswith("$argon2")
    assert verify_password(hashed, "correct horse")
    assert not verify_password(hashed, "wrong horse")
    assert not verify_password(None, "anything")
    with pytest.raises(ValueError):
        hash_password("short")


def test_nul_characters_are_refused_at_the_door() -> None:
    for text in (
        '{"type":"message","client_id":"c","body":"a\\u0000b"}',
        '{"type":"message","client_id":"c","body":"a\x00b"}',
    ):
        with pytest.raises(ProtocolError) as caught:
            parse_visitor_frame(text)
        assert caught.value.code == "bad_frame" and "NUL" in caught.value.message

"""The README's protocol tables and `protocol/outbound.py` describe the same frames with the same fields,
and no other module builds a frame of its own."""

from __future__ import annotations

import inspect
import re
import types
import typing
from pathlib import Path
from typing import Any

from nameplate.protocol import outbound
from nameplate.protocol.vocabulary import ErrorCode, Side, UnassignReason

ROOT = Path(__file__).resolve().parents[2]
INTERNAL = {"encode", "customer_conversation_event", "session_ended_event"}


def _readme_table(title: str) -> dict[str, dict[str, bool]]:
    """frame -> {field: optional} from the README table whose header starts with `title`."""
    text = (ROOT / "README.md").read_text()
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {title} "))
    frames: dict[str, dict[str, bool]] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        name = re.fullmatch(r"`(\w+)`", cells[0])
        assert name, line
        fields = {m.group(1): bool(m.group(2)) for m in re.finditer(r"`(\w+)`(\?)?", cells[1])}
        frames[name.group(1)] = fields
    return frames


def _sample(annotation: Any) -> Any:
    """A value for a builder parameter, never None, so optional fields show up in the frame."""
    hint = annotation
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    origin = typing.get_origin(hint) or hint
    samples: dict[Any, Any] = {
        str: "x", int: 1, bool: True, dict: {}, list: [], ErrorCode: ErrorCode.invalid, Side: Side.visitor,
        UnassignReason: UnassignReason.offline,
    }  # fmt: skip
    return samples[origin]


def _built_frames(socket: str) -> dict[str, dict[str, set[str]]]:
    """frame type -> {"always": fields every builder sets, "some": fields some builder or argument sets}, for
    the frames one socket gets (each socket has a `welcome` of its own: `visitor_welcome`, `agent_welcome`)."""
    other = {"visitor": "agent_welcome", "agent": "visitor_welcome"}[socket]
    frames: dict[str, dict[str, set[str]]] = {}
    for name, builder in inspect.getmembers(outbound, inspect.isfunction):
        if name in INTERNAL or name == other or builder.__module__ != outbound.__name__:
            continue
        hints = typing.get_type_hints(builder)
        parameters = inspect.signature(builder).parameters
        full = builder(**{p: _sample(hints[p]) for p in parameters})
        # The same call with every optional argument left out: what the frame always carries.
        required = {p: _sample(hints[p]) for p, spec in parameters.items() if spec.default is inspect.Parameter.empty}
        minimal = builder(**required)
        entry = frames.setdefault(full["type"], {"always": set(full) - {"type"}, "some": set()})
        entry["some"] |= set(full) - {"type"}
        entry["always"] &= set(minimal) - {"type"}
    return frames


def _check(table: dict[str, dict[str, bool]], built: dict[str, dict[str, set[str]]], frames: frozenset[str]) -> None:
    for frame, fields in table.items():
        assert frame in built, f"README lists `{frame}`, which outbound.py does not build"
        assert set(fields) == built[frame]["some"], f"`{frame}`: README {sorted(fields)} != code {built[frame]}"
        optional = {f for f, is_optional in fields.items() if is_optional}
        assert optional == built[frame]["some"] - built[frame]["always"], f"`{frame}`: optional fields differ"
        assert frame in frames, f"`{frame}` is in the README table but not in the socket's frame list"


def test_visitor_frames_match_the_readme() -> None:
    table = _readme_table("visitor socket frame")
    built = _built_frames("visitor")
    _check(table, built, outbound.VISITOR_FRAMES)
    assert set(table) == outbound.VISITOR_FRAMES


def test_agent_frames_match_the_readme() -> None:
    table = _readme_table("agent socket frame")
    built = _built_frames("agent")
    visitor_table = _readme_table("visitor socket frame")
    # The agent table lists the agent's own frames; the shared ones are the visitor table's, named after it.
    shared = outbound.AGENT_FRAMES - set(table)
    _check(table, built, outbound.AGENT_FRAMES)
    assert shared <= set(visitor_table), f"agent frames described nowhere: {sorted(shared - set(visitor_table))}"
    text = (ROOT / "README.md").read_text()
    sentence = text[text.index("The agent socket also gets") :].split("\n\n")[0]
    assert set(re.findall(r"`(\w+)`", sentence)) == shared


def test_every_built_frame_is_listed_for_a_socket() -> None:
    assert set(_built_frames("visitor")) == outbound.VISITOR_FRAMES | outbound.AGENT_FRAMES


def test_no_module_builds_a_frame_of_its_own() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in (ROOT / "server").rglob("*.py")
        if path.name != "outbound.py"
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if re.search(r"""["']type["']\s*:\s*["']""", line)
    ]
    assert offenders == []

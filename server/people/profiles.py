"""An agent's own profile: the name, title and intro the widget shows beside their photo."""

from __future__ import annotations

from sqlalchemy import update
from sqlmodel import col

from nameplate.errors import NameplateError, NotFound
from nameplate.people.directory import clean_name
from nameplate.protocol.vocabulary import ErrorCode
from nameplate.store.engine import Sessions
from nameplate.store.models import Agent

MAX_TITLE_CHARS = 120
MAX_INTRO_CHARS = 280


def clean_line(value: str | None, field: str, limit: int) -> str:
    """An optional one-line text: whitespace folded, length checked (said, not silently cut)."""
    cleaned = " ".join((value or "").split())
    if len(cleaned) > limit:
        raise NameplateError(ErrorCode.invalid, f"{field} is limited to {limit} characters")
    return cleaned


class Profiles:
    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    async def update_profile(
        self, agent_id: str, *, given_name: str, family_name: str, title: str, intro: str
    ) -> Agent:
        """Names are required (a real person, by name); title and intro are optional one-liners.

        The caller drops the directory's cached card, so messages and the widget show the change.
        """
        values = {
            "given_name": clean_name(given_name, "given name"),
            "family_name": clean_name(family_name, "family name"),
            "title": clean_line(title, "title", MAX_TITLE_CHARS),
            "intro": clean_line(intro, "intro", MAX_INTRO_CHARS),
        }
        async with self._sessions() as session:
            await session.execute(update(Agent).where(col(Agent.id) == agent_id).values(**values))
            await session.commit()
            agent = await session.get(Agent, agent_id, populate_existing=True)
        if agent is None:
            raise NotFound("no such agent")
        return agent

"""The audit log: an append-only record of supervision and of every change to the desk.

Who watched a chat, whispered, took one over, exported transcripts, changed agents, roles, teams, API keys,
webhooks or site settings — with the time and the address it came from. Rows are only ever inserted; this
module has no update or delete, and neither does anything else. Admins read it on /admin/audit and export it
as CSV (the same formula-safe cells as transcript exports).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlmodel import col

from nameplate.desk.transcripts import csv_safe, csv_text, utc_iso
from nameplate.protocol.vocabulary import AuditAction
from nameplate.store.engine import Sessions
from nameplate.store.models import Agent, AuditEntry

# Bounds on what one entry keeps: targets and details are built from names and ids, capped all the same.
MAX_TARGET_CHARS = 300
MAX_DETAILS_CHARS = 2000
MAX_ADDRESS_CHARS = 64
PAGE_SIZE = 100
# One export holds at most this many entries (newest first); a site's year of changes fits many times.
MAX_EXPORT_ROWS = 100_000
CSV_COLUMNS = ("at", "actor_id", "actor_name", "action", "target", "details", "address")

# How each action reads on the page.
LABELS: dict[str, str] = {
    AuditAction.watched: "watched a chat",
    AuditAction.whispered: "whispered to the agent",
    AuditAction.took_over: "took a chat over",
    AuditAction.exported: "exported transcripts",
    AuditAction.agent_created: "created an agent",
    AuditAction.agent_changed: "changed an agent",
    AuditAction.team_changed: "changed a team",
    AuditAction.api_key_created: "created an API key",
    AuditAction.api_key_revoked: "revoked an API key",
    AuditAction.webhook_created: "added a webhook",
    AuditAction.webhook_deleted: "deleted a webhook",
    AuditAction.site_settings_changed: "changed site settings",
}


@dataclass(frozen=True)
class AuditPage:
    entries: list[AuditEntry]
    total: int
    page: int
    page_size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))


def _cap(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


class Audit:
    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    async def record(
        self,
        site_id: str,
        actor: Agent | None,
        action: AuditAction,
        target: str = "",
        details: str = "",
        address: str | None = None,
    ) -> AuditEntry:
        """Append one entry. `actor` None: the system or the command line."""
        entry = AuditEntry(
            site_id=site_id,
            actor_id=actor.id if actor else None,
            actor_name=actor.full_name if actor else "system",
            action=action,
            target=_cap(target, MAX_TARGET_CHARS),
            details=_cap(details, MAX_DETAILS_CHARS),
            address=_cap(address or "", MAX_ADDRESS_CHARS),
        )
        async with self._sessions() as session:
            session.add(entry)
            await session.commit()
            await session.refresh(entry)
        return entry

    async def page(self, site_id: str, page: int = 1, action: str | None = None) -> AuditPage:
        """One page of a site's entries, newest first; only that site's."""
        conditions = [col(AuditEntry.site_id) == site_id]
        if action:
            conditions.append(col(AuditEntry.action) == action)
        async with self._sessions() as session:
            counted = await session.execute(select(func.count()).select_from(AuditEntry).where(*conditions))
            total = counted.scalar_one()
            result = await session.execute(
                select(AuditEntry)
                .where(*conditions)
                .order_by(col(AuditEntry.at).desc(), col(AuditEntry.id))
                .offset((max(1, page) - 1) * PAGE_SIZE)
                .limit(PAGE_SIZE)
            )
            entries = list(result.scalars())
        return AuditPage(entries, int(total), max(1, page), PAGE_SIZE)

    async def all(self, site_id: str) -> list[AuditEntry]:
        async with self._sessions() as session:
            result = await session.execute(
                select(AuditEntry)
                .where(col(AuditEntry.site_id) == site_id)
                .order_by(col(AuditEntry.at).desc(), col(AuditEntry.id))
                .limit(MAX_EXPORT_ROWS)
            )
            return list(result.scalars())


def audit_record(entry: AuditEntry) -> list[str]:
    return [
        utc_iso(entry.at) or "",
        entry.actor_id or "",
        csv_safe(entry.actor_name),
        entry.action,
        csv_safe(entry.target),
        csv_safe(entry.details),
        csv_safe(entry.address),
    ]


def audit_csv(entries: Iterable[AuditEntry]) -> str:
    return csv_text([CSV_COLUMNS, *(audit_record(entry) for entry in entries)])


def label(action: str) -> str:
    return LABELS.get(action, action)


def when(moment: datetime) -> str:
    return utc_iso(moment) or ""

"""The daily digest of every rating comment and the Monday "last week" mail, each sent once per site and
day however many processes run: the first process to insert the day's lease row sends it.

The lease row and the digest's outbox rows are one transaction: a crash in between cannot lose the day's
digest, and the process that loses the race for the lease stores no mail. A digest is composed only while its
lease is still free, so the check every minute costs one look-up once the day's digest has gone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Sequence
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from nameplate.desk.transcripts import as_utc, format_duration
from nameplate.insight.mailing import Outbox, OutgoingMail, send
from nameplate.insight.reports import Period, Reports
from nameplate.people.directory import Directory
from nameplate.protocol.vocabulary import EventKind
from nameplate.store.engine import Sessions
from nameplate.store.models import Agent, InsightEvent, InsightLease, Rating, Role, Site, utcnow

log = logging.getLogger("nameplate.insight")

CHECK_EVERY_SECONDS = 60.0
SUPERVISOR_ROLE_VALUES = (Role.supervisor, Role.admin)
TOP_QUESTIONS = 5


def parse_clock(value: str) -> time | None:
    """The local time digests go out, or None for "off" (a server whose supervisors read reports only, and the
    tests, which must not get a digest in their outbox because the suite happened to run after eight)."""
    if value.strip().lower() == "off":
        return None
    try:
        return time.fromisoformat(value.strip())
    except ValueError as exc:
        raise ValueError(f"DIGEST_TIME must look like 08:00 (or be off), not {value!r}") from exc


def percent(value: float | None) -> str:
    return f"{value * 100:.0f} %" if value is not None else "—"


class Digests:
    def __init__(
        self,
        sessions: Sessions,
        directory: Directory,
        reports: Reports,
        outbox: Outbox,
        send_at: str,
        zone: str,
        top_questions: object | None = None,
    ) -> None:
        self._sessions = sessions
        self._directory = directory
        self._reports = reports
        self._outbox = outbox
        self._send_at = parse_clock(send_at)
        self._zone = ZoneInfo(zone)
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.top_questions = top_questions  # async (site_id, period) -> list[(text, count)]

    async def leased(self, name: str) -> bool:
        async with self._sessions() as session:
            return await session.get(InsightLease, name) is not None

    async def take_lease(self, name: str, mails: Sequence[OutgoingMail] = ()) -> bool:
        """True for exactly one caller per name, across every process on the store; that caller's `mails` go
        into the outbox in the lease's transaction, the others' nowhere."""
        try:
            async with self._sessions() as session:
                session.add(InsightLease(name=name, holder=self._holder))
                for mail in mails:
                    await send(self._outbox, session, mail)
                await session.commit()
        except IntegrityError:
            return False
        if mails:
            self._outbox.wake()
        return True

    async def run_due(self, now: datetime | None = None) -> list[str]:
        """Send whatever is due at `now` and not yet sent by anyone; returns the leases this call took."""
        if self._send_at is None:
            return []
        now = as_utc(now or utcnow())
        local = now.astimezone(self._zone)
        if local.time() < self._send_at:
            return []
        yesterday = local.date() - timedelta(days=1)
        taken = []
        for site in await self._directory.sites():
            name = f"daily:{site.id}:{yesterday.isoformat()}"
            if not await self.leased(name):
                mails = await self._daily(site, Period(yesterday, yesterday, self._zone))
                if await self.take_lease(name, mails):
                    taken.append(name)
            if local.weekday() == 0:
                week = Period(local.date() - timedelta(days=7), yesterday, self._zone)
                name = f"weekly:{site.id}:{week.first.isoformat()}"
                if not await self.leased(name):
                    mails = await self._weekly(site, week)
                    if await self.take_lease(name, mails):
                        taken.append(name)
        return taken

    async def _supervisors(self, site_id: str) -> list[Agent]:
        return [a for a in await self._directory.agents(site_id) if a.active and a.role in SUPERVISOR_ROLE_VALUES]

    async def _mail_all(self, site: Site, subject: str, text: str, category: str) -> list[OutgoingMail]:
        """One mail per supervisor of the site: from the site itself, about no conversation."""
        return [
            OutgoingMail(
                to=supervisor.email,
                subject=subject,
                text=text,
                from_name=site.name,
                site_id=site.id,
                to_name=supervisor.full_name,
                category=category,
            )
            for supervisor in await self._supervisors(site.id)
        ]

    async def comments(self, site_id: str, period: Period) -> list[tuple[int, str, str | None]]:
        """(score, comment, credited agent's name) of every rating with a comment given in the period."""
        async with self._sessions() as session:
            rows = await session.execute(
                select(
                    col(Rating.conversation_id),
                    col(Rating.score),
                    col(Rating.comment),
                    col(Agent.given_name),
                    col(Agent.family_name),
                )
                .join(InsightEvent, col(InsightEvent.conversation_id) == col(Rating.conversation_id))
                .outerjoin(Agent, col(Agent.id) == col(InsightEvent.agent_id))
                .where(
                    col(InsightEvent.site_id) == site_id,
                    col(InsightEvent.kind) == EventKind.rated.value,
                    col(InsightEvent.at) >= period.start,
                    col(InsightEvent.at) < period.end,
                    col(Rating.comment) != "",
                )
                .order_by(col(InsightEvent.at))
            )
            seen: dict[str, tuple[int, str, str | None]] = {}
            for conversation_id, score, comment, given, family in rows:
                # A rating changed during the day is one comment (the rating row holds the latest).
                seen[conversation_id] = (score, comment, f"{given} {family}" if given else None)
            return list(seen.values())

    async def _daily(self, site: Site, period: Period) -> list[OutgoingMail]:
        comments = await self.comments(site.id, period)
        day = period.first.strftime("%A %d %B %Y")
        lines = [f"Every rating comment left on {day} ({self._zone.key}):", ""]
        if not comments:
            lines.append("No comments that day.")
        for score, comment, agent in comments:
            lines.append(f"{'★' * score}{'☆' * (5 - score)}  {agent or 'no agent'}")
            lines.extend(f"    {line}" for line in comment.splitlines() or [""])
            lines.append("")
        return await self._mail_all(site, f"{len(comments)} comment(s) on {day}", "\n".join(lines), "daily_digest")

    async def _weekly(self, site: Site, week: Period) -> list[OutgoingMail]:
        report = await self._reports.report(site.id, week)
        total = report.total
        lines = [
            f"Last week ({week.first.isoformat()} to {week.last.isoformat()}, {self._zone.key}):",
            "",
            f"Chats: {total.chats} (served {total.served}, missed {total.missed})",
            f"Queue wait: median {format_duration(total.wait.median) or '—'}, "
            f"p90 {format_duration(total.wait.p90) or '—'}",
            f"First response: median {format_duration(total.first_response.median) or '—'}, "
            f"p90 {format_duration(total.first_response.p90) or '—'}",
            f"CSAT: {percent(total.csat)} of {total.ratings} rating(s); response rate {percent(total.response_rate)}",
            f"Abandoned: {total.abandoned} ({total.quick_abandoned} within 10 s)",
        ]
        if callable(self.top_questions):
            questions = await self.top_questions(site.id, week)
            if questions:
                lines += ["", "Asked most often:"]
                lines += [f"  {count} × {text}" for text, count in questions[:TOP_QUESTIONS]]
        return await self._mail_all(site, f"Last week at {site.name}", "\n".join(lines) + "\n", "weekly_digest")

    @property
    def scheduled(self) -> bool:
        return self._send_at is not None

    async def loop(self) -> None:
        while True:
            try:
                await self.run_due()
            except Exception:
                log.exception("sending the digests failed")
            await asyncio.sleep(CHECK_EVERY_SECONDS)

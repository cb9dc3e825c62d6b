"""Insight's parts for one process, built with the other services (see `nameplate.services`)."""

from __future__ import annotations

from nameplate.infra.background import BackgroundTask
from nameplate.insight.digests import Digests
from nameplate.insight.follow_ups import FollowUps
from nameplate.insight.mailing import MemoryOutbox, Outbox
from nameplate.insight.reports import Reports
from nameplate.people.directory import Directory
from nameplate.store.engine import Sessions


class Insight:
    def __init__(
        self,
        sessions: Sessions,
        directory: Directory,
        digest_time: str,
        digest_zone: str,
        embedder: str = "auto",
        outbox: Outbox | None = None,
    ) -> None:
        # `Services.build` passes the e-mail outbox's adapter (nameplate.mail.insight_mail); an Insight built on
        # its own keeps its mails in this process's memory.
        self.outbox: Outbox = outbox or MemoryOutbox()
        self.reports = Reports(sessions, directory, embedder)
        self.follow_ups = FollowUps(sessions, directory, self.outbox)
        self.digests = Digests(
            sessions, directory, self.reports, self.outbox, digest_time, digest_zone, self.reports.top_questions
        )
        self._background = BackgroundTask(self.digests.loop, "insight-digests")

    def start(self) -> None:
        if self.digests.scheduled:
            self._background.start()

    async def stop(self) -> None:
        await self._background.stop()

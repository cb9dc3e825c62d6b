"""Digests go out once however many processes run; a follow-up reaches the visitor who gave up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from nameplate.config import Settings
from nameplate.errors import NameplateError
from nameplate.insight.mailing import MemoryOutbox
from nameplate.services import Services
from nameplate.store import migrate
from nameplate.store.models import Agent, Customer, InsightLease, Role
from tests.services import create_postgres_database, drop_postgres_database


@dataclass
class Shop:
    processes: list[Services]
    site_id: str
    supervisor: Agent
    agent: Agent
    customer_id: str


@pytest.fixture
async def shop() -> AsyncIterator[Shop]:
    """Two service containers — two processes' worth — on one PostgreSQL database, digests at 08:00 Berlin."""
    url = await create_postgres_database()
    processes: list[Services] = []
    try:
        await migrate.upgrade_to_head(url)
        settings = Settings(
            database_url=url, secret_key="digest-test", digest_time="08:00", digest_timezone="Europe/Berlin"
        )
        processes = [Services.build(settings), Services.build(settings)]
        for services in processes:
            services.message_log.start()
        directory = processes[0].directory
        site = await directory.create_site("Digest Shop", allowed_origins="*")
        supervisor = await directory.create_agent(
            site.id, given_name="Sam", family_name="Super", email="sam@shop.example",
            password="correct horse battery", role=Role.supervisor.value,
        )  # fmt: skip
        agent = await directory.create_agent(
            site.id, given_name="Jane", family_name="Doe", email="jane@shop.example", password="correct horse battery"
        )
        customer = Customer(site_id=site.id, name="Ann\r\nBcc: evil@example.com", email="ann@example.com")
        async with processes[0].sessions() as session:
            session.add(customer)
            await session.commit()
        yield Shop(processes, site.id, supervisor, agent, customer.id)
    finally:
        for services in processes:
            await services.message_log.stop()
            await services.engine.dispose()
        await drop_postgres_database(url)


def mails(shop: Shop) -> list:
    found = []
    for services in shop.processes:
        outbox = services.insight.outbox
        assert isinstance(outbox, MemoryOutbox)
        found.extend(outbox.mails)
    return found


async def test_the_daily_and_weekly_digests_are_sent_once_by_two_processes(shop: Shop) -> None:
    one = shop.processes[0]
    conversation = await one.conversations.start(shop.site_id, shop.customer_id)
    await one.conversations.mark_assigned(conversation.id, shop.agent.id)
    await one.conversations.close(conversation, "Jane")
    await one.conversations.rate(await one.conversations.get(conversation.id), 2, "Took ages.\nBcc: nobody")
    # A Monday morning in Berlin, the day after the rating: both the daily and the weekly mail are due.
    rated_day = datetime.now(UTC).astimezone(one.insight.digests._zone).date()
    monday = rated_day + timedelta(days=(7 - rated_day.weekday()) % 7 or 7)
    now = datetime(monday.year, monday.month, monday.day, 7, 30, tzinfo=UTC)  # 08:30 in Berlin (CET)
    names: list[str] = []
    if monday - rated_day != timedelta(days=1):
        # The rating was not on a Sunday: the daily digest for the rating's day is checked on the next morning.
        daily_now = datetime(rated_day.year, rated_day.month, rated_day.day, 7, 30, tzinfo=UTC) + timedelta(days=1)
        taken = await asyncio.gather(*(p.insight.digests.run_due(daily_now) for p in shop.processes))
        names = [name for each in taken for name in each]
        assert names == [f"daily:{shop.site_id}:{rated_day.isoformat()}"]
    taken = await asyncio.gather(*(p.insight.digests.run_due(now) for p in shop.processes))
    monday_names = sorted(name for each in taken for name in each)
    assert [n.split(":")[0] for n in monday_names] == ["daily", "weekly"]  # one of each, from either process
    names += monday_names
    # Again, from both: nothing more.
    assert await asyncio.gather(*(p.insight.digests.run_due(now) for p in shop.processes)) == [[], []]
    sent = mails(shop)
    daily = [m for m in sent if m.category == "daily_digest" and "Took ages." in m.text]
    weekly = [m for m in sent if m.category == "weekly_digest"]
    assert len(daily) == 1 and daily[0].to == "sam@shop.example"  # supervisors only, once
    assert "★★☆☆☆  Jane Doe" in daily[0].text
    assert len(weekly) == 1 and "Chats: 1 (served 1, missed 0)" in weekly[0].text
    assert "CSAT: 0 % of 1 rating(s); response rate 100 %" in weekly[0].text
    async with one.sessions() as session:
        leases = (await session.execute(select(func.count()).select_from(InsightLease))).scalar_one()
    assert leases == len(names)


async def test_before_the_configured_time_nothing_is_sent(shop: Shop) -> None:
    early = datetime(2026, 12, 7, 6, 59, tzinfo=UTC)  # 07:59 in Berlin
    assert await shop.processes[0].insight.digests.run_due(early) == []
    assert mails(shop) == []


async def test_a_follow_up_goes_once_to_the_visitor_who_gave_up_with_safe_headers(shop: Shop) -> None:
    one = shop.processes[0]
    conversation = await one.conversations.start(shop.site_id, shop.customer_id)
    follow_ups = one.insight.follow_ups
    with pytest.raises(NameplateError) as refused:
        await follow_ups.send(shop.supervisor, conversation.id)
    assert refused.value.code == "not_abandoned"
    await one.conversations.abandon(conversation.id, "https://shop.example/checkout", datetime.now(UTC))
    mail = await follow_ups.send(shop.supervisor, conversation.id, sender_id=shop.agent.id)
    assert mail.to == "ann@example.com" and mail.reply_to == "jane@shop.example"
    assert mail.from_name == "Jane Doe (Digest Shop)"
    assert "https://shop.example/checkout" in mail.text and "\r" not in mail.subject
    with pytest.raises(NameplateError) as again:
        await follow_ups.send(shop.supervisor, conversation.id)
    assert again.value.code == "already_sent"
    assert [m.category for m in mails(shop)] == ["follow_up"]

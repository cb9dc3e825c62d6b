"""Digests go out once however many processes run; a follow-up reaches the visitor who gave up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from nameplate.config import Settings
from nameplate.errors import NameplateError
from nameplate.insight.reports import Period
from nameplate.mail.compose import to_message
from nameplate.services import Services
from nameplate.store import migrate
from nameplate.store.models import Agent, Customer, InsightLease, OutboxMail, Role
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
        await processes[0].mail.site_settings.update(site.id, "help@shop.example", "reply.shop.example")
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


async def mails(shop: Shop) -> list[OutboxMail]:
    """Every row of the e-mail outbox both processes write to (one database), oldest first."""
    async with shop.processes[0].sessions() as session:
        rows = await session.execute(select(OutboxMail).order_by(OutboxMail.created_at))
        return list(rows.scalars())


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
    sent = await mails(shop)
    assert sorted(m.kind for m in sent) == ["daily_digest"] * (len(names) - 1) + ["weekly_digest"]
    daily = [m for m in sent if m.kind == "daily_digest" and "Took ages." in m.text_body]
    weekly = [m for m in sent if m.kind == "weekly_digest"]
    assert len(daily) == 1 and daily[0].to_address == "sam@shop.example"  # supervisors only, once
    assert "★★☆☆☆  Jane Doe" in daily[0].text_body
    assert len(weekly) == 1 and "Chats: 1 (served 1, missed 0)" in weekly[0].text_body
    assert "CSAT: 0 % of 1 rating(s); response rate 100 %" in weekly[0].text_body
    assert weekly[0].subject == "Last week at Digest Shop" and weekly[0].to_address == "sam@shop.example"
    for digest in (daily[0], weekly[0]):
        message = to_message(digest)
        # From the site at its own sending address; about no conversation, so no reply token to answer.
        assert message["From"].addresses[0].display_name == "Digest Shop"
        assert message["From"].addresses[0].addr_spec == "help@shop.example"
        assert message["To"].addresses[0].display_name == "Sam Super"
        assert digest.conversation_id is None and "Reply-To" not in message
        assert message["Auto-Submitted"] == "auto-generated" and digest.state == "pending"
    async with one.sessions() as session:
        leases = (await session.execute(select(func.count()).select_from(InsightLease))).scalar_one()
    assert leases == len(names)


async def test_before_the_configured_time_nothing_is_sent(shop: Shop) -> None:
    early = datetime(2026, 12, 7, 6, 59, tzinfo=UTC)  # 07:59 in Berlin
    assert await shop.processes[0].insight.digests.run_due(early) == []
    assert await mails(shop) == []


async def test_the_process_that_loses_the_lease_stores_no_digest(shop: Shop) -> None:
    one, two = shop.processes
    monday = datetime(2026, 12, 7, 7, 30, tzinfo=UTC)  # 08:30 in Berlin
    assert sorted(await one.insight.digests.run_due(monday)) == [
        f"daily:{shop.site_id}:2026-12-06",
        f"weekly:{shop.site_id}:2026-11-30",
    ]
    before = await mails(shop)
    assert [m.kind for m in before] == ["daily_digest", "weekly_digest"]
    # The second process composed the same digests but finds the lease taken at commit: its rows roll back.
    sunday = Period(date(2026, 12, 6), date(2026, 12, 6), ZoneInfo("Europe/Berlin"))
    late = await two.insight.digests._daily(await two.directory.site(shop.site_id), sunday)
    assert [m.to for m in late] == ["sam@shop.example"]
    assert not await two.insight.digests.take_lease(f"daily:{shop.site_id}:2026-12-06", late)
    assert [m.id for m in await mails(shop)] == [m.id for m in before]


async def test_a_follow_up_goes_once_to_the_visitor_who_gave_up_with_safe_headers(shop: Shop) -> None:
    one = shop.processes[0]
    conversation = await one.conversations.start(shop.site_id, shop.customer_id)
    follow_ups = one.insight.follow_ups
    with pytest.raises(NameplateError) as refused:
        await follow_ups.send(shop.supervisor, conversation.id)
    assert refused.value.code == "not_abandoned"
    await one.conversations.abandon(conversation.id, "https://shop.example/checkout", datetime.now(UTC))
    mail = await follow_ups.send(shop.supervisor, conversation.id, sender_id=shop.agent.id)
    assert mail.to == "ann@example.com" and mail.from_name == "Jane Doe (Digest Shop)"
    with pytest.raises(NameplateError) as again:
        await follow_ups.send(shop.supervisor, conversation.id)
    assert again.value.code == "already_sent"
    (row,) = await mails(shop)
    assert (row.kind, row.to_address, row.conversation_id) == ("follow_up", "ann@example.com", conversation.id)
    assert row.subject == "Sorry we missed you — Digest Shop"
    message = to_message(row)
    # From the chosen colleague by name, at the site's address (never her own); the reply token names the chat.
    assert message["From"].addresses[0].display_name == "Jane Doe (Digest Shop)"
    assert message["From"].addresses[0].addr_spec == "help@shop.example"
    reply_to = str(message["Reply-To"])
    assert reply_to.startswith("reply+") and reply_to.endswith("@reply.shop.example")
    token = reply_to[len("reply+") : reply_to.index("@")]
    assert one.mail.tokens.read(token).conversation_id == conversation.id
    assert "jane@shop.example" not in str(row.headers)
    # The visitor's name cannot add a header: one recipient, no line break in any header.
    assert [a.addr_spec for a in message["To"].addresses] == ["ann@example.com"] and "Bcc" not in message
    assert not any("\r" in str(v) or "\n" in str(v) for v in row.headers.values())
    text = row.text_body
    assert text.startswith("Hi Ann,") and "https://shop.example/checkout" in text and "\nJane Doe\n" in text

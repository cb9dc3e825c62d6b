"""Issue 19, the webhook findings: non-public targets refused at create and at delivery (unless
WEBHOOKS_ALLOW_PRIVATE), coarse delivery errors, retries stopped when a hook is deleted."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from nameplate.config import Settings
from nameplate.errors import NameplateError
from nameplate.integrations.webhook_targets import check
from nameplate.store.models import Webhook, WebhookDelivery, utcnow
from tests.harness import RunningServer, free_port, poll_until, running_server, seeded_settings
from tests.integration.test_webhooks import Receiver, admin_client

NON_PUBLIC = [
    "http://127.0.0.1/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/",
    "http://192.168.1.10:8080/",
    "http://172.16.0.5/",
    "http://100.64.0.1/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[fd00:ec2::254]/",
    "http://localhost:6379/",
    "http://api.localhost/",
    "http://0.0.0.0:5432/",
    "http://2130706433/",
    "http://127.1/",
    "http://0x7f.1/",
]


def test_the_setting_is_off_by_default() -> None:
    assert Settings().webhooks_allow_private is False
    assert Settings.from_env({"SECRET_KEY": "k"}).webhooks_allow_private is False
    assert Settings.from_env({"SECRET_KEY": "k", "WEBHOOKS_ALLOW_PRIVATE": "true"}).webhooks_allow_private is True
    with pytest.raises(ValueError, match="WEBHOOKS_ALLOW_PRIVATE"):
        Settings.from_env({"SECRET_KEY": "k", "WEBHOOKS_ALLOW_PRIVATE": "maybe"})


@pytest.mark.parametrize("url", NON_PUBLIC)
async def test_non_public_targets_are_refused(url: str) -> None:
    with pytest.raises(NameplateError) as refused:
        await check(url, allow_private=False)
    assert refused.value.status == 422
    # A public address is accepted (no connection is made to check it).
    target = await check("https://93.184.215.14/hook", allow_private=False)
    assert target.url == "https://93.184.215.14/hook" and target.sni == "93.184.215.14"


async def test_create_refuses_non_public_targets_with_a_clear_error(server: RunningServer) -> None:
    site = await server.services.directory.site_by_key("site_demo")
    http, token = await admin_client(server)
    try:
        for url in ("http://127.0.0.1:9/hook", "http://169.254.169.254/", "http://2130706433/"):
            response = await http.post("/admin/integrations/webhooks", data={"url": url, "csrf_token": token})
            assert response.status_code == 422, (url, response.status_code)
        accepted = await http.post(
            "/admin/integrations/webhooks", data={"url": "https://93.184.215.14/hook", "csrf_token": token}
        )
        assert accepted.status_code == 303
    finally:
        await http.aclose()
    async with server.services.sessions() as session:
        urls = list((await session.execute(select(Webhook.url).where(Webhook.site_id == site.id))).scalars())
    assert urls == ["https://93.184.215.14/hook"]


async def delivery_of(server: RunningServer, hook_id: str) -> WebhookDelivery | None:
    async with server.services.sessions() as session:
        result = await session.execute(select(WebhookDelivery).where(WebhookDelivery.webhook_id == hook_id))
        return result.scalars().first()


async def test_delivery_re_checks_the_target_and_never_posts_inside(server: RunningServer) -> None:
    """A hook accepted while its host was public, now pointing inside (DNS rebinding, or an edited row):
    the delivery is refused at send time and the receiver inside hears nothing."""
    site = await server.services.directory.site_by_key("site_demo")
    webhooks = server.services.webhooks
    async with Receiver(failures=0) as inside:
        hook = await webhooks.create(site.id, "https://93.184.215.14/hook", "customer.updated")
        async with server.services.sessions() as session:
            await session.execute(update(Webhook).where(Webhook.id == hook.id).values(url=inside.url))
            await session.commit()
        webhooks._hooks.forget(site.id)
        await webhooks.emit(site.id, "customer.updated", {"id": "c1"})
        delivery = await poll_until(lambda: _attempted(server, hook.id))
        assert delivery.status == "pending" and delivery.last_status_code is None
        assert "not post to loopback" in delivery.last_error
        assert inside.requests == []


async def _attempted(server: RunningServer, hook_id: str) -> WebhookDelivery | None:
    delivery = await delivery_of(server, hook_id)
    return delivery if delivery is not None and delivery.attempts >= 1 else None


async def test_delivery_errors_are_coarse_and_deleting_a_hook_stops_its_retries(tmp_path: Path) -> None:
    async with running_server(await seeded_settings(tmp_path, webhooks_allow_private=True)) as server:
        site = await server.services.directory.site_by_key("site_demo")
        webhooks = server.services.webhooks
        # Each delivery is attempted once now, its retry an hour away: only this test makes it due.
        webhooks.retry_base_seconds = 3600
        # Two closed ports: the error text must not tell them apart from each other, or name the port.
        errors = []
        for port in (free_port(), free_port()):
            hook = await webhooks.create(site.id, f"http://127.0.0.1:{port}/hook", "customer.updated")
            await webhooks.emit(site.id, "customer.updated", {"id": "c1"})
            delivery = await poll_until(lambda hook_id=hook.id: _attempted(server, hook_id))
            errors.append(delivery.last_error)
            await webhooks.delete(site.id, hook.id)
        assert errors == ["could not deliver", "could not deliver"]

        async with Receiver(failures=100) as receiver:
            hook = await webhooks.create(site.id, receiver.url, "customer.updated")
            await webhooks.emit(site.id, "customer.updated", {"id": "c2"})
            await poll_until(lambda: len(receiver.requests) >= 1)
            first = await poll_until(lambda: _attempted(server, hook.id))
            assert first.last_error == "HTTP 500" and first.status == "pending"
            seen = len(receiver.requests)
            await webhooks.delete(site.id, hook.id)
            # Make its retry due at once: a deleted hook must still not be called again.
            async with server.services.sessions() as session:
                await session.execute(
                    update(WebhookDelivery)
                    .where(WebhookDelivery.webhook_id == hook.id)
                    .values(next_attempt_at=utcnow() - timedelta(seconds=1))
                )
                await session.commit()
            await webhooks.deliver_due()
            stopped = await delivery_of(server, hook.id)
            assert stopped.status == "failed" and stopped.last_error == "webhook deleted"
            assert await webhooks.deliver_due() == 0
            assert len(receiver.requests) == seen

"""Outgoing webhooks: each event is stored as a delivery per subscribed hook, then POSTed in the background.

Body: JSON `{"id", "type", "created_at", "site_id", "data"}`. Header `Nameplate-Signature:
t=<unix seconds>,v1=<hex HMAC-SHA256(hook secret, "<t>.<body>")>`; receivers recompute it, compare in
constant time and reject timestamps older than five minutes (replay window). A failed delivery is
retried with exponential back-off; after MAX_ATTEMPTS it is marked failed. Any process may deliver:
a delivery is claimed with a conditional UPDATE (a lease), so two processes never send it twice at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlmodel import col

from nameplate.errors import NameplateError
from nameplate.infra.background import BackgroundTask
from nameplate.infra.refreshing_cache import RefreshingCache
from nameplate.protocol.vocabulary import ErrorCode
from nameplate.store.engine import Sessions, rows_changed
from nameplate.store.models import Webhook, WebhookDelivery, iso, new_id, utcnow

log = logging.getLogger("nameplate.webhooks")

EVENT_TYPES = (
    "conversation.created",
    "conversation.assigned",
    "conversation.transferred",
    "conversation.closed",
    "message.created",
    "customer.updated",
    "event.created",
)
MAX_ATTEMPTS = 8
# 5 s, 10 s, 20 s … about 10 minutes in all before giving up: rides out a receiver's redeploy.
RETRY_BASE_SECONDS = 5.0
# A claimed delivery that was not finished (the process died) becomes due again after this.
LEASE_SECONDS = 60.0
REPLAY_WINDOW_SECONDS = 300
# 10 s: a hook added or removed through another process takes effect here within seconds.
HOOKS_CACHE_SECONDS = 10.0
BATCH = 50


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: str, header: str, body: bytes, now: float | None = None) -> bool:
    """What a receiver does (and what the README shows): recompute, compare, check the window."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((now or time.time()) - timestamp) > REPLAY_WINDOW_SECONDS:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), header)


def _subscribed(hook: Webhook, event_type: str) -> bool:
    wanted = hook.events.split()
    return "*" in wanted or event_type in wanted


class Webhooks:
    def __init__(self, sessions: Sessions, retry_base_seconds: float = RETRY_BASE_SECONDS) -> None:
        self._sessions = sessions
        self.retry_base_seconds = retry_base_seconds
        self._hooks = RefreshingCache("webhooks of site", lambda: HOOKS_CACHE_SECONDS, self._look_up)
        self._wake = asyncio.Event()
        self._background = BackgroundTask(self._run, "webhooks")
        self._client: httpx.AsyncClient | None = None

    # -- management ----------------------------------------------------------------------------------
    async def create(self, site_id: str, url: str, events: str = "*") -> Webhook:
        url = url.strip()
        if not url.startswith(("http://", "https://")) or len(url) > 2000:
            raise NameplateError(ErrorCode.invalid, "a webhook needs an http:// or https:// URL", 422)
        chosen = events.split() or ["*"]
        unknown = [e for e in chosen if e != "*" and e not in EVENT_TYPES]
        if unknown:
            raise NameplateError(ErrorCode.invalid, f"unknown event types: {', '.join(unknown)}", 422)
        hook = Webhook(site_id=site_id, url=url, events=" ".join(chosen))
        async with self._sessions() as session:
            session.add(hook)
            await session.commit()
        self._hooks.forget(site_id)
        return hook

    async def delete(self, site_id: str, webhook_id: str) -> None:
        async with self._sessions() as session:
            hook = await session.get(Webhook, webhook_id)
            if hook is None or hook.site_id != site_id:
                raise NameplateError(ErrorCode.not_found, "no such webhook", 404)
            hook.active = False
            await session.commit()
        self._hooks.forget(site_id)

    async def hooks(self, site_id: str) -> list[Webhook]:
        """The site's active hooks. Every message asks, on the way to its ack: see RefreshingCache."""
        return await self._hooks.get(site_id)

    async def _look_up(self, site_id: str) -> list[Webhook]:
        async with self._sessions() as session:
            result = await session.execute(
                select(Webhook)
                .where(col(Webhook.site_id) == site_id, col(Webhook.active).is_(True))
                .order_by(col(Webhook.created_at))
            )
            return list(result.scalars())

    async def deliveries(self, site_id: str, limit: int = 100) -> list[tuple[WebhookDelivery, Webhook]]:
        async with self._sessions() as session:
            result = await session.execute(
                select(WebhookDelivery, Webhook)
                .join(Webhook, col(Webhook.id) == col(WebhookDelivery.webhook_id))
                .where(col(Webhook.site_id) == site_id)
                .order_by(col(WebhookDelivery.created_at).desc())
                .limit(limit)
            )
            return [(delivery, hook) for delivery, hook in result.all()]

    # -- emitting ------------------------------------------------------------------------------------
    async def emit(self, site_id: str, event_type: str, data: dict[str, Any]) -> None:
        """Record the event for every hook that wants it; delivery happens in the background."""
        hooks = [h for h in await self.hooks(site_id) if _subscribed(h, event_type)]
        if not hooks:
            return
        now = utcnow()
        payload = json.dumps(
            {"id": "evt_" + new_id(), "type": event_type, "created_at": iso(now), "site_id": site_id, "data": data},
            separators=(",", ":"),
            default=str,
        )
        async with self._sessions() as session:
            for hook in hooks:
                session.add(WebhookDelivery(webhook_id=hook.id, event_type=event_type, payload=payload))
            await session.commit()
        self._wake.set()

    # -- delivering ----------------------------------------------------------------------------------
    def start(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=10.0, follow_redirects=False)
        self._background.start()

    async def stop(self) -> None:
        await self._background.stop()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _run(self) -> None:
        while True:
            try:
                delivered = await self.deliver_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook delivery pass failed")
                delivered = 0
            if delivered == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=min(1.0, self.retry_base_seconds))
                self._wake.clear()

    async def deliver_due(self) -> int:
        """One pass: claim due deliveries and send them. Returns how many were attempted."""
        now = utcnow()
        async with self._sessions() as session:
            result = await session.execute(
                select(col(WebhookDelivery.id), col(WebhookDelivery.next_attempt_at))
                .where(col(WebhookDelivery.status) == "pending", col(WebhookDelivery.next_attempt_at) <= now)
                .order_by(col(WebhookDelivery.next_attempt_at))
                .limit(BATCH)
            )
            due = list(result.all())
            claimed = []
            for delivery_id, due_at in due:
                lease = await session.execute(
                    update(WebhookDelivery)
                    .where(
                        col(WebhookDelivery.id) == delivery_id,
                        col(WebhookDelivery.next_attempt_at) == due_at,
                        col(WebhookDelivery.status) == "pending",
                    )
                    .values(next_attempt_at=now + timedelta(seconds=LEASE_SECONDS))
                )
                if rows_changed(lease) == 1:
                    claimed.append(delivery_id)
            await session.commit()
        for delivery_id in claimed:
            await self._attempt(delivery_id)
        return len(claimed)

    async def _attempt(self, delivery_id: str) -> None:
        async with self._sessions() as session:
            delivery = await session.get(WebhookDelivery, delivery_id)
            hook = await session.get(Webhook, delivery.webhook_id) if delivery else None
        if delivery is None or hook is None:
            return
        body = delivery.payload.encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Nameplate-Webhooks/1",
            "Nameplate-Signature": sign(hook.secret, int(time.time()), body),
            "Nameplate-Event": delivery.event_type,
            "Nameplate-Delivery": delivery.id,
        }
        status_code: int | None = None
        error: str | None = None
        try:
            if self._client is None:
                self._client = httpx.AsyncClient(timeout=10.0, follow_redirects=False)
            response = await self._client.post(hook.url, content=body, headers=headers)
            status_code = response.status_code
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        attempts = delivery.attempts + 1
        values: dict[str, Any] = {"attempts": attempts, "last_status_code": status_code, "last_error": error}
        if error is None:
            values.update(status="delivered", delivered_at=utcnow())
        elif attempts >= MAX_ATTEMPTS:
            values.update(status="failed")
        else:
            delay = self.retry_base_seconds * 2 ** (attempts - 1)
            values.update(next_attempt_at=utcnow() + timedelta(seconds=delay))
        async with self._sessions() as session:
            await session.execute(
                update(WebhookDelivery).where(col(WebhookDelivery.id) == delivery.id).values(**values)
            )
            await session.commit()

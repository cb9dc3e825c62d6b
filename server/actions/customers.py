"""What changes a customer record: identify (sign in), page views, events posted from other channels."""

from __future__ import annotations

from typing import Any

from nameplate.people.customers import customer_card, display_name
from nameplate.people.identity import IdentifyRequest, IdentifyResult
from nameplate.people.timeline import event_item
from nameplate.protocol import channels, outbound
from nameplate.protocol.vocabulary import ConversationStatus
from nameplate.services import Services
from nameplate.store.models import Customer, Site
from nameplate.store.views import ConversationView, CustomerView


async def identify(
    services: Services, site: Site, customer: Customer | CustomerView, request: IdentifyRequest
) -> IdentifyResult:
    """Link the visitor to the website's signed-in user (verified by HMAC) or update their profile."""
    result = await services.identity.identify(site, customer, request)
    await services.webhooks.emit(site.id, "customer.updated", customer_card(result.customer))
    return result


async def record_page_view(
    services: Services, customer: CustomerView, conversation: ConversationView | None, url: str, title: str
) -> None:
    """The visitor moved to another page: kept on the record, and shown to the agent of an open chat."""
    url, title = url.strip(), " ".join(title.split())
    await services.customers.record_page(customer.id, url, title)
    if conversation is None or conversation.status == ConversationStatus.closed:
        return
    await services.conversations.system_line(
        conversation.id, f"{display_name(customer)} is now on {title or url} ({url})", private=True
    )
    await services.broker.fanout.publish(
        channels.staff(conversation.id), outbound.page(conversation.id, customer.id, url, title)
    )


async def post_customer_event(
    services: Services, site: Site, customer: Customer, data: dict[str, Any]
) -> tuple[dict[str, Any], bool]:
    """A call, a store visit, an e-mail from another system. Posting the same event id twice stores it once;
    a new event goes to the webhooks and to the agent of the customer's open chat."""
    event, created = await services.timeline.record(customer, data)
    item = event_item(event)
    if created:
        await services.webhooks.emit(site.id, "event.created", {"customer_id": customer.id, **item})
        open_conversation = await services.conversations.open_for_customer(customer.id)
        if open_conversation is not None:
            await services.broker.fanout.publish(
                channels.staff(open_conversation.id),
                outbound.customer_event(open_conversation.id, customer.id, item),
            )
    return item, created

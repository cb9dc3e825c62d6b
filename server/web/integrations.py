"""Admin page for integrations: site API keys (shown once) and outgoing webhooks with their delivery log."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from nameplate.integrations.webhooks import EVENT_TYPES
from nameplate.protocol.vocabulary import AuditAction
from nameplate.store.models import Role
from nameplate.web.audit_trail import audit
from nameplate.web.pages import check_csrf, render, require_agent, services_of


async def _page(request: Request, new_key: str | None = None, error: str | None = None, status: int = 200) -> Response:
    agent = await require_agent(request, Role.admin)
    services = services_of(request)
    site = await services.directory.site(agent.site_id)
    return render(
        request,
        "integrations.html",
        status=status,
        agent=agent,
        site=site,
        keys=await services.api_keys.list(agent.site_id),
        hooks=await services.webhooks.hooks(agent.site_id),
        deliveries=await services.webhooks.deliveries(agent.site_id, limit=50),
        event_types=EVENT_TYPES,
        new_key=new_key,
        error=error,
    )


async def integrations_page(request: Request) -> Response:
    return await _page(request)


async def create_key(request: Request) -> Response:
    agent = await require_agent(request, Role.admin)
    await check_csrf(request)
    form = await request.form()
    record, key = await services_of(request).api_keys.create(agent.site_id, str(form.get("name") or ""))
    await audit(request, agent, AuditAction.api_key_created, f"{record.name} ({record.prefix}…)")
    # The key is rendered once, in this response, and never stored in readable form.
    return await _page(request, new_key=key, status=201)


async def revoke_key(request: Request) -> Response:
    agent = await require_agent(request, Role.admin)
    await check_csrf(request)
    await services_of(request).api_keys.revoke(agent.site_id, request.path_params["key_id"])
    await audit(request, agent, AuditAction.api_key_revoked, request.path_params["key_id"])
    return RedirectResponse("/admin/integrations", status_code=303)


async def create_hook(request: Request) -> Response:
    agent = await require_agent(request, Role.admin)
    await check_csrf(request)
    form = await request.form()
    events = " ".join(str(v) for v in form.getlist("events")) or "*"
    hook = await services_of(request).webhooks.create(agent.site_id, str(form.get("url") or ""), events)
    await audit(request, agent, AuditAction.webhook_created, hook.url, f"events: {hook.events}")
    return RedirectResponse("/admin/integrations", status_code=303)


async def delete_hook(request: Request) -> Response:
    agent = await require_agent(request, Role.admin)
    await check_csrf(request)
    await services_of(request).webhooks.delete(agent.site_id, request.path_params["hook_id"])
    await audit(request, agent, AuditAction.webhook_deleted, request.path_params["hook_id"])
    return RedirectResponse("/admin/integrations", status_code=303)


routes = [
    Route("/admin/integrations", integrations_page),
    Route("/admin/integrations/keys", create_key, methods=["POST"]),
    Route("/admin/integrations/keys/{key_id}/revoke", revoke_key, methods=["POST"]),
    Route("/admin/integrations/webhooks", create_hook, methods=["POST"]),
    Route("/admin/integrations/webhooks/{hook_id}/delete", delete_hook, methods=["POST"]),
]

"""The audit log's pages: admins read it and export it as CSV (the export is itself recorded)."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from nameplate.desk.audit import LABELS, audit_csv, label
from nameplate.desk.transcripts import format_time
from nameplate.protocol.vocabulary import AuditAction
from nameplate.store.models import Role
from nameplate.web.audit_trail import audit
from nameplate.web.pages import render, require_agent, services_of
from nameplate.web.supervisor import attachment, page


@page
async def audit_page(request: Request) -> Response:
    admin = await require_agent(request, Role.admin)
    try:
        number = max(1, int(request.query_params.get("page") or 1))
    except ValueError:
        number = 1
    action = request.query_params.get("action") or None
    if action not in LABELS:
        action = None
    result = await services_of(request).audit.page(admin.site_id, number, action)
    return render(
        request,
        "admin_audit.html",
        agent=admin,
        result=result,
        action=action or "",
        actions=LABELS,
        label=label,
        format_time=format_time,
    )


@page
async def audit_export(request: Request) -> Response:
    admin = await require_agent(request, Role.admin)
    services = services_of(request)
    entries = await services.audit.all(admin.site_id)
    await audit(request, admin, AuditAction.exported, "audit log", f"csv, {len(entries)} entries")
    day = datetime.now(UTC).date().isoformat()
    return Response(
        audit_csv(entries), media_type="text/csv; charset=utf-8", headers=attachment(f"nameplate-audit-{day}.csv")
    )


routes: list[BaseRoute] = [
    Route("/admin/audit", audit_page, methods=["GET"]),
    Route("/admin/audit.csv", audit_export, methods=["GET"]),
]

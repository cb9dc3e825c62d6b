"""The supervisor's desk (conversations, transcripts, exports, the live board) and agent management.

Thin: read the request, check who is asking, call `nameplate.desk.transcripts` / `nameplate.people.staff`,
render. Every id in a URL is checked against the signed-in agent's site by those services, so another site's
id is a 404.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from nameplate.desk.transcripts import (
    ConversationQuery,
    Transcripts,
    csv_chunks,
    day_bounds,
    format_duration,
    format_time,
    json_chunks,
    parse_day,
    transcript_csv,
    transcript_text,
    utc_iso,
)
from nameplate.errors import NameplateError, NotFound
from nameplate.people.credentials import SESSION_VERSION
from nameplate.people.photos import MAX_UPLOAD_BYTES
from nameplate.people.staff import NewAgent, Staff
from nameplate.protocol.vocabulary import STAFF_ROLES, AuditAction, ErrorCode, is_staff
from nameplate.store.models import Agent, ConversationStatus, Role
from nameplate.web.audit_trail import audit
from nameplate.web.pages import (
    check_csrf,
    current_agent,
    login_redirect,
    render,
    require_agent,
    services_of,
    templates,
)

Endpoint = Callable[[Request], Awaitable[Response]]

# The export form's default range when the filters name none: the last 30 days, today included.
DEFAULT_EXPORT_DAYS = 30
FLASH_KEY = "flash"
AGENT_FORM_FIELDS = ("given_name", "family_name", "title", "intro", "email", "role", "capacity", "password")
# Exports hold customers' words: never cached, never sniffed into something else.
PRIVATE_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
# The HTML export is a standalone file: its own inline styles, no scripts, nothing loaded from anywhere.
EXPORT_HTML_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)


def transcripts_of(request: Request) -> Transcripts:
    return Transcripts(services_of(request).sessions)


def staff_of(request: Request) -> Staff:
    services = services_of(request)
    return Staff(services.sessions, services.broker, services.directory, services.router)


def page(endpoint: Endpoint) -> Endpoint:
    """HTML endpoints answer errors with a page (and "log in first" with the log-in page), not JSON."""

    @functools.wraps(endpoint)
    async def wrapper(request: Request) -> Response:
        try:
            return await endpoint(request)
        except NameplateError as exc:
            if exc.status == 401:
                return login_redirect()
            return render(
                request, "supervisor_error.html", status=exc.status, agent=await current_agent(request), error=exc
            )

    return wrapper


def helpers() -> dict[str, Any]:
    return {"format_time": format_time, "format_duration": format_duration, "utc_iso": utc_iso}


def attachment(filename: str) -> dict[str, str]:
    # Every filename here is built from ids and dates ([A-Za-z0-9_-.]): no quoting issues.
    return {**PRIVATE_HEADERS, "Content-Disposition": f'attachment; filename="{filename}"'}


# -- conversations ---------------------------------------------------------------------------------------
@page
async def conversations_page(request: Request) -> Response:
    viewer = await require_agent(request, *STAFF_ROLES)
    params = request.query_params
    filters = {key: params.get(key, "").strip() for key in ("q", "from", "to", "agent", "status", "team")}
    try:
        page_number = max(1, int(params.get("page") or 1))
    except ValueError:
        page_number = 1
    query = ConversationQuery(
        site_id=viewer.site_id,
        first_day=parse_day(filters["from"], "from"),
        last_day=parse_day(filters["to"], "to"),
        agent_id=filters["agent"] or None,
        status=filters["status"] or None,
        team_id=filters["team"] or None,
        text=filters["q"],
        page=page_number,
    )
    result = await transcripts_of(request).search(query)
    directory = services_of(request).directory
    today = datetime.now(UTC).date()
    active_filters = {key: value for key, value in filters.items() if value}

    def page_url(number: int) -> str:
        return "/supervisor/conversations?" + urlencode({**active_filters, "page": number})

    return render(
        request,
        "supervisor_conversations.html",
        agent=viewer,
        result=result,
        filters=filters,
        filtered=bool(active_filters),
        agents=await directory.agents(viewer.site_id),
        teams=await directory.teams(viewer.site_id),
        statuses=[status.value for status in ConversationStatus],
        page_url=page_url,
        export_from=filters["from"] or (today - timedelta(days=DEFAULT_EXPORT_DAYS - 1)).isoformat(),
        export_to=filters["to"] or today.isoformat(),
        **helpers(),
    )


@page
async def transcript_page(request: Request) -> Response:
    viewer = await require_agent(request)
    transcripts = transcripts_of(request)
    row = await transcripts.visible(viewer, request.path_params["conversation_id"])
    transcript = await transcripts.transcript(row, viewer.site_id)
    return render(
        request,
        "supervisor_transcript.html",
        agent=viewer,
        transcript=transcript,
        is_staff=is_staff(viewer.role),
        **helpers(),
    )


@page
async def transcript_export(request: Request) -> Response:
    fmt = request.path_params["fmt"]
    if fmt not in ("txt", "html", "json", "csv"):
        raise NotFound("exports are .txt, .html, .json or .csv")
    viewer = await require_agent(request)
    transcripts = transcripts_of(request)
    row = await transcripts.visible(viewer, request.path_params["conversation_id"])
    transcript = await transcripts.transcript(row, viewer.site_id)
    headers = attachment(f"conversation-{row.id}.{fmt}")
    await audit(request, viewer, AuditAction.exported, f"conversation {row.id}", fmt)
    if fmt == "txt":
        return PlainTextResponse(transcript_text(transcript), headers=headers)
    if fmt == "json":
        return JSONResponse(transcript.as_dict(), headers=headers)
    if fmt == "csv":
        return Response(transcript_csv(transcript), media_type="text/csv; charset=utf-8", headers=headers)
    html = templates.get_template("supervisor_export.html").render(transcript=transcript, **helpers())
    return Response(
        html, media_type="text/html; charset=utf-8", headers={**headers, "Content-Security-Policy": EXPORT_HTML_CSP}
    )


@page
async def range_export(request: Request) -> Response:
    fmt = request.path_params["fmt"]
    if fmt not in ("csv", "json"):
        raise NotFound("exports are .csv or .json")
    viewer = await require_agent(request, *STAFF_ROLES)
    first = parse_day(request.query_params.get("from"), "from")
    last = parse_day(request.query_params.get("to"), "to")
    if first is None or last is None:
        raise NameplateError(ErrorCode.invalid, "choose both dates: from=YYYY-MM-DD and to=YYYY-MM-DD")
    day_bounds(first, last)  # refuses a reversed range before the response starts
    await audit(request, viewer, AuditAction.exported, f"messages {first.isoformat()} to {last.isoformat()}", fmt)
    batches = transcripts_of(request).stream_lines(viewer.site_id, first, last)
    headers = attachment(f"nameplate-messages-{first.isoformat()}-to-{last.isoformat()}.{fmt}")
    if fmt == "csv":
        return StreamingResponse(csv_chunks(batches), media_type="text/csv; charset=utf-8", headers=headers)
    site = await services_of(request).directory.site(viewer.site_id)
    header = {"site": site.name, "from": first.isoformat(), "to": last.isoformat()}
    return StreamingResponse(json_chunks(batches, header), media_type="application/json", headers=headers)


# -- live ------------------------------------------------------------------------------------------------
@page
async def live_page(request: Request) -> Response:
    viewer = await require_agent(request, *STAFF_ROLES)
    return render(request, "supervisor_live.html", agent=viewer)


async def live_snapshot(request: Request) -> Response:
    """The board's starting point; the page then follows the site channel over /ws/agent."""
    viewer = await require_agent(request, *STAFF_ROLES)
    conversations = await transcripts_of(request).live(viewer.site_id)
    return JSONResponse({"conversations": conversations}, headers=PRIVATE_HEADERS)


# -- agents (admins) ---------------------------------------------------------------------------------------
def flash(request: Request, message: str) -> None:
    request.session[FLASH_KEY] = message


async def agents_view(
    request: Request, admin: Agent, status: int = 200, error: str | None = None, form: dict[str, str] | None = None
) -> Response:
    services = services_of(request)
    return render(
        request,
        "admin_agents.html",
        status=status,
        agent=admin,
        agents=await staff_of(request).roster(admin.site_id),
        roles=[role.value for role in Role],
        form=form or {"role": Role.agent, "capacity": str(services.settings.agent_default_capacity)},
        error=error,
        notice=request.session.pop(FLASH_KEY, None),
        max_photo_mb=MAX_UPLOAD_BYTES // 2**20,
        **helpers(),
    )


@page
async def agents_page(request: Request) -> Response:
    admin = await require_agent(request, Role.admin)
    return await agents_view(request, admin)


@page
async def create_agent(request: Request) -> Response:
    admin = await require_agent(request, Role.admin)
    await check_csrf(request)
    form = await request.form()
    values = {name: str(form.get(name) or "") for name in AGENT_FORM_FIELDS}
    try:
        try:
            capacity = int(values["capacity"] or services_of(request).settings.agent_default_capacity)
        except ValueError as exc:
            raise NameplateError(ErrorCode.invalid, "capacity must be a whole number") from exc
        created = await staff_of(request).create(
            admin.site_id,
            NewAgent(
                given_name=values["given_name"],
                family_name=values["family_name"],
                email=values["email"],
                password=values["password"],
                title=values["title"],
                intro=values["intro"],
                role=values["role"] or Role.agent,
                capacity=capacity,
            ),
        )
    except NameplateError as exc:
        values.pop("password")
        return await agents_view(request, admin, status=exc.status, error=exc.message, form=values)
    who = f"{created.full_name} <{created.email}>"
    await audit(request, admin, AuditAction.agent_created, who, f"role {created.role}")
    flash(request, f"{created.full_name} can now log in as {created.email}.")
    return RedirectResponse("/admin/agents", status_code=303)


@page
async def agent_action(request: Request) -> Response:
    admin = await require_agent(request, Role.admin)
    await check_csrf(request)
    staff = staff_of(request)
    agent_id = request.path_params["agent_id"]
    action = request.path_params["action"]
    try:
        if action == "deactivate":
            target = await staff.deactivate(admin.site_id, agent_id, by=admin)
            message = f"{target.full_name} is deactivated and signed out everywhere."
        elif action == "reactivate":
            target = await staff.reactivate(admin.site_id, agent_id)
            message = f"{target.full_name} can log in again."
        elif action == "password":
            form = await request.form()
            password = form.get("password")
            target = await staff.reset_password(admin.site_id, agent_id, password if isinstance(password, str) else "")
            if target.id == admin.id:
                # Your own reset signs out your other sessions, not this one.
                request.session[SESSION_VERSION] = target.session_version
            message = f"{target.full_name} has a new password; their old sessions have ended."
        else:
            raise NotFound("no such action")
    except NameplateError as exc:
        if exc.status == 404:
            raise
        return await agents_view(request, admin, status=exc.status, error=exc.message)
    await audit(request, admin, AuditAction.agent_changed, f"{target.full_name} <{target.email}>", action)
    flash(request, message)
    return RedirectResponse("/admin/agents", status_code=303)


async def supervisor_home(request: Request) -> Response:
    return RedirectResponse("/supervisor/conversations", status_code=303)


routes: list[BaseRoute] = [
    Route("/supervisor", supervisor_home),
    Route("/supervisor/conversations", conversations_page),
    Route("/supervisor/conversations/{conversation_id}", transcript_page),
    Route("/supervisor/conversations/{conversation_id}/export.{fmt}", transcript_export),
    Route("/supervisor/export.{fmt}", range_export),
    Route("/supervisor/live", live_page),
    Route("/supervisor/live.json", live_snapshot),
    Route("/admin/agents", agents_page, methods=["GET"]),
    Route("/admin/agents", create_agent, methods=["POST"]),
    Route("/admin/agents/{agent_id}/{action}", agent_action, methods=["POST"]),
]

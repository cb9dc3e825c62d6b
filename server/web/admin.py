"""Admin pages beyond the agent list: teams (create, rename, members) and any agent's photo.

Thin: check the admin, parse the form, call `nameplate.people.teams` / `nameplate.people.photos`, redirect
with a notice or render the page again with the error.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from nameplate.errors import NameplateError
from nameplate.people.photos import MAX_UPLOAD_BYTES, store_photo
from nameplate.people.teams import Teams
from nameplate.protocol.vocabulary import AuditAction, ErrorCode
from nameplate.store.models import Agent, Role
from nameplate.web.audit_trail import audit
from nameplate.web.console import MAX_FIELD_BYTES, MAX_PROFILE_REQUEST_BYTES, drain, text_field
from nameplate.web.pages import check_csrf, render, require_agent, services_of
from nameplate.web.supervisor import FLASH_KEY, agents_view, flash, page, staff_of

# A members form names each agent once; a site with more agents than this is not a small team.
MAX_MEMBER_FIELDS = 1000


def teams_of(request: Request) -> Teams:
    services = services_of(request)
    return Teams(services.sessions, services.broker, services.directory, services.router)


async def teams_view(request: Request, admin: Agent, status: int = 200, error: str | None = None) -> Response:
    return render(
        request,
        "admin_teams.html",
        status=status,
        agent=admin,
        teams=await teams_of(request).roster(admin.site_id),
        agents=[a for a in await staff_of(request).roster(admin.site_id) if a.active],
        error=error,
        notice=request.session.pop(FLASH_KEY, None),
    )


@page
async def teams_page(request: Request) -> Response:
    admin = await require_agent(request, Role.admin)
    return await teams_view(request, admin)


@page
async def create_team(request: Request) -> Response:
    admin = await require_agent(request, Role.admin)
    form = await request.form(max_files=0, max_fields=10, max_part_size=MAX_FIELD_BYTES)
    await check_csrf(request)
    try:
        team = await teams_of(request).create(admin.site_id, text_field(form, "name"))
    except NameplateError as exc:
        return await teams_view(request, admin, exc.status, exc.message)
    await audit(request, admin, AuditAction.team_changed, team.name, "created")
    flash(request, f"Team {team.name} is created; tick its members below.")
    return RedirectResponse("/admin/teams", status_code=303)


@page
async def team_action(request: Request) -> Response:
    admin = await require_agent(request, Role.admin)
    form = await request.form(max_files=0, max_fields=MAX_MEMBER_FIELDS, max_part_size=MAX_FIELD_BYTES)
    await check_csrf(request)
    teams = teams_of(request)
    team_id = request.path_params["team_id"]
    action = request.path_params["action"]
    try:
        if action == "rename":
            team = await teams.rename(admin.site_id, team_id, text_field(form, "name"))
            message = f"The team is now called {team.name}."
        elif action == "members":
            members = {value for value in form.getlist("members") if isinstance(value, str)}
            result = await teams.set_members(admin.site_id, team_id, members)
            count = len(result.members)
            message = f"{result.team.name} has {count} member{'' if count == 1 else 's'}."
        else:
            raise NameplateError(ErrorCode.not_found, "no such action", 404)
    except NameplateError as exc:
        if exc.status == 404:
            raise
        return await teams_view(request, admin, exc.status, exc.message)
    await audit(request, admin, AuditAction.team_changed, team_id, message)
    flash(request, message)
    return RedirectResponse("/admin/teams", status_code=303)


@page
async def agent_photo(request: Request) -> Response:
    """An admin sets any of the site's agents' photo: visitors see a face, never initials."""
    admin = await require_agent(request, Role.admin)
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        return await agents_view(request, admin, 411, "the upload did not say how large it is; try again")
    if int(length) > MAX_PROFILE_REQUEST_BYTES:
        await drain(request)
        return await agents_view(request, admin, 413, f"photos are limited to {MAX_UPLOAD_BYTES // 2**20} MB")
    form = await request.form(max_files=1, max_fields=10, max_part_size=MAX_FIELD_BYTES)
    await check_csrf(request)
    services = services_of(request)
    try:
        target = await staff_of(request).get(admin.site_id, request.path_params["agent_id"])
        upload: Any = form.get("photo")
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise NameplateError(ErrorCode.invalid, "choose a photo to upload")
        await store_photo(services.sessions, target.id, await upload.read(MAX_UPLOAD_BYTES + 1))
    except NameplateError as exc:
        if exc.status == 404:
            raise
        return await agents_view(request, admin, exc.status, exc.message)
    # Messages and the widget read agent cards through the directory's cache: drop the stale one now.
    services.directory.forget_card(target.id)
    await audit(request, admin, AuditAction.agent_changed, f"{target.full_name} <{target.email}>", "photo")
    flash(request, f"{target.full_name} has a new photo.")
    return RedirectResponse("/admin/agents", status_code=303)


routes: list[BaseRoute] = [
    Route("/admin/teams", teams_page, methods=["GET"]),
    Route("/admin/teams", create_team, methods=["POST"]),
    Route("/admin/teams/{team_id}/{action}", team_action, methods=["POST"]),
    # More specific than /admin/agents/{agent_id}/{action}: listed before it in the app's routes.
    Route("/admin/agents/{agent_id}/photo", agent_photo, methods=["POST"]),
]

"""The agent console: the live inbox page, its JSON look-ups, canned responses and the agent's profile.

The inbox itself is live over /ws/agent (server/realtime/agent.py); the endpoints here serve what the
socket does not carry: the customer sidebar, recently closed chats, canned responses, profile edits.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from nameplate.desk.canned import MAX_BODY_CHARS, MAX_SHORTCUT_CHARS, CannedResponses, canned_card
from nameplate.desk.lookups import ConsoleLookups
from nameplate.errors import Forbidden, NameplateError
from nameplate.people.photos import MAX_UPLOAD_BYTES, store_photo
from nameplate.people.profiles import MAX_INTRO_CHARS, MAX_TITLE_CHARS, Profiles
from nameplate.protocol.vocabulary import ErrorCode, is_staff
from nameplate.store.models import Agent, ConversationStatus
from nameplate.web.pages import (
    check_csrf,
    current_agent,
    login_redirect,
    render,
    require_agent,
    services_of,
)

# The photo plus the form's few small fields; a bigger request is refused before it is parsed.
MAX_PROFILE_REQUEST_BYTES = MAX_UPLOAD_BYTES + 64 * 1024
# Past this, an oversized upload is not even read to the end: the connection is simply not reused.
MAX_DRAINED_BYTES = 16 * 1024 * 1024
# Plain form fields (names, canned bodies) are small; this bounds what one field may hold in memory.
MAX_FIELD_BYTES = 16 * 1024
JSON_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def json_response(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers=JSON_HEADERS)


def lookups_of(request: Request) -> ConsoleLookups:
    services = services_of(request)
    return ConsoleLookups(services.sessions, services.customers, services.timeline)


def canned_of(request: Request) -> CannedResponses:
    return CannedResponses(services_of(request).sessions)


def text_field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


# -- the inbox ---------------------------------------------------------------------------------------
async def console_page(request: Request) -> Response:
    agent = await current_agent(request)
    if agent is None:
        return login_redirect()
    return render(
        request, "console.html", agent=agent, max_message_chars=services_of(request).settings.max_message_chars
    )


async def api_canned(request: Request) -> Response:
    agent = await require_agent(request)
    responses = await canned_of(request).for_site(agent.site_id)
    return json_response({"canned": [canned_card(c) for c in responses]})


async def api_recent(request: Request) -> Response:
    agent = await require_agent(request)
    return json_response({"conversations": await lookups_of(request).recently_closed(agent.id)})


async def api_customer(request: Request) -> Response:
    agent = await require_agent(request)
    profile = await lookups_of(request).customer_profile(request.path_params["customer_id"], agent.site_id)
    return json_response(profile)


async def api_conversation(request: Request) -> Response:
    """One conversation as the inbox lists it: for a queue entry the board names but the inbox never saw."""
    agent = await require_agent(request)
    services = services_of(request)
    conversation = await services.conversations.get_in_site(request.path_params["conversation_id"], agent.site_id)
    visible = (
        conversation.status == ConversationStatus.queued or conversation.agent_id == agent.id or is_staff(agent.role)
    )
    if not visible:
        raise Forbidden("only supervisors can open other agents' conversations")
    return json_response({"conversation": await services.conversations.summary(conversation)})


# -- canned responses --------------------------------------------------------------------------------
async def canned_page(request: Request, agent: Agent, status: int = 200, **context: Any) -> Response:
    responses = await canned_of(request).for_site(agent.site_id)
    context.setdefault("form", {"shortcut": "", "body": ""})
    return render(
        request,
        "canned.html",
        status=status,
        agent=agent,
        responses=responses,
        max_shortcut=MAX_SHORTCUT_CHARS,
        max_body=MAX_BODY_CHARS,
        saved=request.query_params.get("saved"),
        **context,
    )


async def canned_settings(request: Request) -> Response:
    agent = await current_agent(request)
    if agent is None:
        return login_redirect()
    return await canned_page(request, agent)


async def canned_save(request: Request) -> Response:
    agent = await current_agent(request)
    if agent is None:
        return login_redirect()
    form = await request.form(max_files=0, max_fields=10, max_part_size=MAX_FIELD_BYTES)
    try:
        await check_csrf(request)
    except NameplateError as exc:
        return await canned_page(request, agent, exc.status, error=exc.message)
    canned = canned_of(request)
    action = text_field(form, "action")
    values = {"shortcut": text_field(form, "shortcut"), "body": text_field(form, "body")}
    try:
        if action == "delete":
            await canned.delete(agent.site_id, text_field(form, "id"))
        else:
            await canned.create(agent.site_id, values["shortcut"], values["body"])
    except NameplateError as exc:
        return await canned_page(request, agent, exc.status, error=exc.message, form=values)
    return RedirectResponse("/settings/canned?saved=" + ("deleted" if action == "delete" else "created"), 303)


# -- profile -----------------------------------------------------------------------------------------
def profile_page(request: Request, agent: Agent, status: int = 200, **context: Any) -> Response:
    context.setdefault(
        "form",
        {"given_name": agent.given_name, "family_name": agent.family_name, "title": agent.title, "intro": agent.intro},
    )
    return render(
        request,
        "profile.html",
        status=status,
        agent=agent,
        saved=request.query_params.get("saved"),
        max_title=MAX_TITLE_CHARS,
        max_intro=MAX_INTRO_CHARS,
        max_photo_mb=MAX_UPLOAD_BYTES // (1024 * 1024),
        **context,
    )


async def profile(request: Request) -> Response:
    agent = await current_agent(request)
    if agent is None:
        return login_redirect()
    return profile_page(request, agent)


async def drain(request: Request) -> None:
    """Read (and drop) an oversized body, so the browser gets our answer instead of a reset connection."""
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > MAX_DRAINED_BYTES:
            break


async def profile_save(request: Request) -> Response:
    agent = await current_agent(request)
    if agent is None:
        return login_redirect()
    services = services_of(request)
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        return profile_page(request, agent, 411, error="the upload did not say how large it is; try again")
    if int(length) > MAX_PROFILE_REQUEST_BYTES:
        await drain(request)
        return profile_page(request, agent, 413, error=f"photos are limited to {MAX_UPLOAD_BYTES // 2**20} MB")
    form = await request.form(max_files=1, max_fields=10, max_part_size=MAX_FIELD_BYTES)
    try:
        await check_csrf(request)
    except NameplateError as exc:
        return profile_page(request, agent, exc.status, error=exc.message, form=_profile_values(form, agent))
    action = text_field(form, "action")
    try:
        if action == "photo":
            await _save_photo(request, agent, form.get("photo"))
        else:
            values = _profile_values(form, agent)
            await Profiles(services_of(request).sessions).update_profile(
                agent.id,
                given_name=values["given_name"],
                family_name=values["family_name"],
                title=values["title"],
                intro=values["intro"],
            )
    except NameplateError as exc:
        return profile_page(request, agent, exc.status, error=exc.message, form=_profile_values(form, agent))
    # Messages and the widget read agent cards through the directory's cache: drop the stale one now.
    services.directory.forget_card(agent.id)
    return RedirectResponse("/profile?saved=" + ("photo" if action == "photo" else "details"), 303)


def _profile_values(form: FormData, agent: Agent) -> dict[str, str]:
    if text_field(form, "action") == "photo":
        return {
            "given_name": agent.given_name,
            "family_name": agent.family_name,
            "title": agent.title,
            "intro": agent.intro,
        }
    return {name: text_field(form, name) for name in ("given_name", "family_name", "title", "intro")}


async def _save_photo(request: Request, agent: Agent, upload: Any) -> None:
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise NameplateError(ErrorCode.invalid, "choose a photo to upload")
    data = await upload.read(MAX_UPLOAD_BYTES + 1)
    await store_photo(services_of(request).sessions, agent.id, data)


routes = [
    Route("/console", console_page),
    Route("/console/api/canned", api_canned),
    Route("/console/api/recent", api_recent),
    Route("/console/api/customers/{customer_id}", api_customer),
    Route("/console/api/conversations/{conversation_id}", api_conversation),
    Route("/settings/canned", canned_settings, methods=["GET"]),
    Route("/settings/canned", canned_save, methods=["POST"]),
    Route("/profile", profile, methods=["GET"]),
    Route("/profile", profile_save, methods=["POST"]),
]

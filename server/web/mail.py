"""E-mail pages and endpoints: the console's outbox (the dev outbox without SMTP_URL), inbound mail,
the site's mail settings, an agent's "reply by e-mail" and "send transcript", the provider inbound hook,
and the public pages a mail links to (the conversation, the rating form)."""

from __future__ import annotations

import hmac
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from nameplate.errors import Forbidden, NameplateError, NotFound
from nameplate.mail.compose import customer_reply
from nameplate.mail.inbound import MAX_INBOUND_BYTES
from nameplate.protocol.vocabulary import ErrorCode
from nameplate.store.models import Agent, Role
from nameplate.web.api import preflight
from nameplate.web.console import drain, json_response, text_field
from nameplate.web.pages import check_csrf, current_agent, login_redirect, render, require_agent, services_of
from nameplate.web.responses import read_json

MAIL_ROLES = (Role.supervisor, Role.admin)
MAX_FORM_BYTES = 64 * 1024


async def _reader(request: Request) -> Agent | Response:
    agent = await current_agent(request)
    if agent is None:
        return login_redirect()
    if agent.role not in {r.value for r in MAIL_ROLES}:
        raise Forbidden("only supervisors and admins read the outbox")
    return agent


# -- the outbox (console) ----------------------------------------------------------------------------
async def outbox_page(request: Request, status: int = 200, **context: Any) -> Response:
    agent = await _reader(request)
    if isinstance(agent, Response):
        return agent
    mail = services_of(request).mail
    return render(
        request,
        "mail_outbox.html",
        status=status,
        agent=agent,
        mails=await mail.outbox.for_site(agent.site_id),
        inbound=await mail.inbound.for_site(agent.site_id),
        settings=await mail.site_settings.get(agent.site_id),
        dev_outbox=mail.dev_outbox,
        saved=request.query_params.get("saved"),
        **context,
    )


async def outbox_list(request: Request) -> Response:
    return await outbox_page(request)


async def settings_save(request: Request) -> Response:
    agent = await require_agent(request, Role.admin)
    form = await request.form(max_files=0, max_fields=10, max_part_size=4096)
    try:
        await check_csrf(request)
        await services_of(request).mail.site_settings.update(
            agent.site_id, text_field(form, "from_address"), text_field(form, "inbound_domain")
        )
    except NameplateError as exc:
        return await outbox_page(request, exc.status, error=exc.message)
    return RedirectResponse("/console/mail?saved=settings", 303)


async def mail_detail(request: Request, status: int = 200, **context: Any) -> Response:
    agent = await _reader(request)
    if isinstance(agent, Response):
        return agent
    mail_service = services_of(request).mail
    mail = await mail_service.outbox.get(agent.site_id, request.path_params["mail_id"])
    if mail is None:
        raise NotFound("no such mail")
    out, inbound = await mail_service.outbox.thread(mail.conversation_id) if mail.conversation_id else ([mail], [])
    thread = sorted([("out", m) for m in out] + [("in", m) for m in inbound], key=lambda item: item[1].created_at)
    return render(
        request,
        "mail_detail.html",
        status=status,
        agent=agent,
        mail=mail,
        headers={**mail.headers, "Subject": mail.subject, "Message-ID": mail.message_id},
        thread=thread,
        dev_outbox=mail_service.dev_outbox,
        **context,
    )


async def mail_reply_as_customer(request: Request) -> Response:
    """Dev outbox: answer a mail as its recipient would; the reply goes through the one inbound parser."""
    agent = await _reader(request)
    if isinstance(agent, Response):
        return agent
    form = await request.form(max_files=0, max_fields=10, max_part_size=MAX_FORM_BYTES)
    mail_service = services_of(request).mail
    try:
        await check_csrf(request)
        mail = await mail_service.outbox.get(agent.site_id, request.path_params["mail_id"])
        if mail is None:
            raise NotFound("no such mail")
        text = text_field(form, "body").strip()
        if not text:
            raise NameplateError(ErrorCode.empty, "write the customer's reply first", 422)
        sender = text_field(form, "from_address").strip() or None
        received = await mail_service.inbound.receive(customer_reply(mail, text, sender))
    except NameplateError as exc:
        return await mail_detail(request, exc.status, error=exc.message)
    return RedirectResponse(f"/console/mail/inbound/{received.id}", 303)


async def mail_retry(request: Request) -> Response:
    agent = await require_agent(request, Role.admin)
    await check_csrf(request)
    if not await services_of(request).mail.outbox.retry(agent.site_id, request.path_params["mail_id"]):
        raise NameplateError(ErrorCode.not_failed, "only a failed mail can be sent again", 409)
    return RedirectResponse(f"/console/mail/{request.path_params['mail_id']}", 303)


async def inbound_detail(request: Request) -> Response:
    """Any agent of the site may read an inbound mail: a held one is announced in the conversation."""
    agent = await current_agent(request)
    if agent is None:
        return login_redirect()
    mail = await services_of(request).mail.inbound.get(agent.site_id, request.path_params["mail_id"])
    if mail is None:
        raise NotFound("no such e-mail")
    raw = mail.raw.decode("utf-8", errors="replace")
    return render(request, "mail_inbound.html", agent=agent, mail=mail, raw=raw)


async def inbound_release(request: Request) -> Response:
    agent = await require_agent(request)
    await check_csrf(request)
    mail = await services_of(request).mail.inbound.release_held(agent.site_id, request.path_params["mail_id"])
    return RedirectResponse(f"/console/mail/inbound/{mail.id}", 303)


# -- the inbox's JSON actions ------------------------------------------------------------------------
async def api_email_reply(request: Request) -> Response:
    agent = await require_agent(request)
    await check_csrf(request)
    data = await read_json(request, max_bytes=64 * 1024)
    body = data.get("body")
    if not isinstance(body, str):
        raise NameplateError(ErrorCode.invalid, "body (the reply) is required", 422)
    stored, mail = await services_of(request).mail.followups.reply_by_email(
        agent, request.path_params["conversation_id"], body
    )
    return json_response({"seq": stored.seq, "mail": {"id": mail.id, "to": mail.to_address}}, 201)


async def api_send_transcript(request: Request) -> Response:
    agent = await require_agent(request)
    await check_csrf(request)
    data = await read_json(request, max_bytes=4096)
    to = data.get("to")
    if to is not None and not isinstance(to, str):
        raise NameplateError(ErrorCode.invalid, "to must be an e-mail address", 422)
    mail = await services_of(request).mail.followups.send_transcript(
        request.path_params["conversation_id"], agent.site_id, to or None
    )
    return json_response({"mail": {"id": mail.id, "to": mail.to_address}}, 201)


async def api_visitor_transcript(request: Request) -> Response:
    """The widget's "E-mail me this transcript": the visitor's own conversation only."""
    services = services_of(request)
    data = await read_json(request, max_bytes=4096)
    site = await services.directory.site_by_key(str(data.get("site") or ""))
    if site is None:
        raise NotFound("unknown site key")
    origin = request.headers.get("origin")
    if not site.origin_allowed(origin):
        raise Forbidden("this page's origin may not use this site's chat")
    customer = await services.customers.from_token(site, str(data.get("token") or ""))
    if customer is None:
        raise NameplateError(ErrorCode.unauthorized, "unknown visitor", 401)
    conversation = await services.conversations.get_in_site(str(data.get("conversation_id") or ""), site.id)
    if conversation.customer_id != customer.id:
        raise NotFound("no such conversation")
    email = data.get("email")
    mail = await services.mail.followups.send_transcript(
        conversation.id, site.id, email if isinstance(email, str) and email else None, by_visitor=True
    )
    headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"} if origin else {}
    return JSONResponse({"sent_to": mail.to_address}, status_code=201, headers=headers)


# -- the provider hook -------------------------------------------------------------------------------
async def inbound_hook(request: Request) -> Response:
    """POST /mail/inbound: the raw RFC 822 mail as the body, `Authorization: Bearer <INBOUND_HOOK_SECRET>`,
    optionally `?to=<envelope recipient>`."""
    mail = services_of(request).mail
    if not mail.hook_secret:
        raise NotFound("the inbound hook is off (set INBOUND_HOOK_SECRET)")
    sent = request.headers.get("authorization", "")
    if not hmac.compare_digest(sent.encode(), f"Bearer {mail.hook_secret}".encode()):
        raise NameplateError(ErrorCode.unauthorized, "wrong or missing inbound hook secret", 401)
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_INBOUND_BYTES:
        await drain(request)
        raise NameplateError(ErrorCode.too_large, f"mail is over the {MAX_INBOUND_BYTES // 2**20} MB limit", 413)
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_INBOUND_BYTES:
            raise NameplateError(ErrorCode.too_large, f"mail is over the {MAX_INBOUND_BYTES // 2**20} MB limit", 413)
    recipients = request.query_params.getlist("to")
    received = await mail.inbound.receive(bytes(raw), recipients)
    return json_response({"id": received.id, "status": received.status, "reason": received.reason})


# -- public pages a mail links to --------------------------------------------------------------------
async def public_conversation(request: Request) -> Response:
    conversation, site, lines = await services_of(request).mail.followups.transcript_by_token(
        request.path_params["token"]
    )
    return render(request, "mail_public.html", agent=None, site=site, lines=lines, rating=None, form=False)


async def rating_form(request: Request) -> Response:
    """GET only shows the form: mail scanners follow links, and a click must not be a vote."""
    followups = services_of(request).mail.followups
    conversation, site, rating = await followups.rating_target(request.path_params["token"])
    return render(request, "mail_public.html", agent=None, site=site, lines=[], rating=rating, form=True)


async def rating_submit(request: Request) -> Response:
    followups = services_of(request).mail.followups
    form = await request.form(max_files=0, max_fields=10, max_part_size=8192)
    token = request.path_params["token"]
    score_text = text_field(form, "score")
    try:
        await check_csrf(request)
        if not score_text.isdigit():
            raise NameplateError(ErrorCode.invalid, "choose a score from 1 to 5", 422)
        await followups.rate_by_token(token, int(score_text), text_field(form, "comment"))
    except NameplateError as exc:
        conversation, site, rating = await followups.rating_target(token)
        return render(
            request, "mail_public.html", status=exc.status, agent=None, site=site, lines=[], rating=rating,
            form=True, error=exc.message,
        )  # fmt: skip
    conversation, site, rating = await followups.rating_target(token)
    return render(request, "mail_public.html", agent=None, site=site, lines=[], rating=rating, form=False, thanks=True)


routes = [
    Route("/console/mail", outbox_list, methods=["GET"]),
    Route("/console/mail/settings", settings_save, methods=["POST"]),
    Route("/console/mail/inbound/{mail_id}", inbound_detail, methods=["GET"]),
    Route("/console/mail/inbound/{mail_id}/release", inbound_release, methods=["POST"]),
    Route("/console/mail/{mail_id}", mail_detail, methods=["GET"]),
    Route("/console/mail/{mail_id}/reply", mail_reply_as_customer, methods=["POST"]),
    Route("/console/mail/{mail_id}/retry", mail_retry, methods=["POST"]),
    Route("/console/api/conversations/{conversation_id}/email-reply", api_email_reply, methods=["POST"]),
    Route("/console/api/conversations/{conversation_id}/transcript-mail", api_send_transcript, methods=["POST"]),
    Route("/api/v1/transcript-mail", api_visitor_transcript, methods=["POST"]),
    Route("/api/v1/transcript-mail", preflight, methods=["OPTIONS"]),
    Route("/mail/inbound", inbound_hook, methods=["POST"]),
    Route("/mail/c/{token}", public_conversation, methods=["GET"]),
    Route("/mail/rate/{token}", rating_form, methods=["GET"]),
    Route("/mail/rate/{token}", rating_submit, methods=["POST"]),
]

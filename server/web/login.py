"""Agent log-in and log-out: argon2-checked passwords, a signed session cookie, throttled attempts.

Form posts carry the session's CSRF token (a log-in form on another site must not sign someone in to
an account of the attacker's choosing). JSON posts are exempt: a cross-site page cannot send
`application/json` without a CORS preflight, and we never allow one.
"""

from __future__ import annotations

import asyncio
import math

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from nameplate.errors import NameplateError
from nameplate.people.credentials import session_payload, verify_password
from nameplate.people.directory import agent_card
from nameplate.protocol.vocabulary import ErrorCode
from nameplate.services import Services
from nameplate.store.models import Agent
from nameplate.web.pages import check_csrf, current_agent, render
from nameplate.web.responses import error_response, read_json

# 5 tries per 5 minutes, per account and per address: slows guessing to a crawl, barely noticed by people.
LOGIN_ATTEMPTS = 5
LOGIN_WINDOW_SECONDS = 300.0


def wants_json_body(request: Request) -> bool:
    return request.headers.get("content-type", "").startswith("application/json")


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def login_credentials(request: Request) -> tuple[str, str, bool]:
    """(email, password, wants_json) from a JSON body or a form post."""
    if wants_json_body(request):
        data = await read_json(request, max_bytes=4096)
        return str(data.get("email") or ""), str(data.get("password") or ""), True
    form = await request.form(max_files=0, max_fields=10)
    return str(form.get("email") or ""), str(form.get("password") or ""), False


def throttle_keys(email: str, ip: str) -> tuple[str, str]:
    return f"login:account:{email}", f"login:ip:{ip}"


async def throttle(services: Services, email: str, ip: str, failed: bool = False) -> float:
    """Seconds to wait before trying again (0: go ahead). Only failed attempts count: a team of agents
    behind one office address all logging in at nine must not lock each other out; a guesser does."""
    waits = []
    for key in throttle_keys(email, ip):
        within, retry_after = await services.broker.counters.hit(
            key, LOGIN_ATTEMPTS - (0 if failed else 1), LOGIN_WINDOW_SECONDS, cost=1 if failed else 0
        )
        if not within:
            waits.append(retry_after)
    return max(waits, default=0.0)


async def authenticate(services: Services, email: str, password: str) -> Agent | None:
    candidates = await services.directory.active_agents_with_email(email)
    # argon2 is deliberately slow (tens of milliseconds): run it off the event loop, which serves every socket.
    for agent in candidates:
        if await asyncio.to_thread(verify_password, agent.password_hash, password):
            return agent
    await asyncio.to_thread(verify_password, None, password)  # same work whether or not the e-mail exists
    return None


def login_page(
    request: Request,
    status: int = 200,
    error: str | None = None,
    email: str = "",
    headers: dict[str, str] | None = None,
) -> Response:
    response = render(request, "login.html", status=status, agent=None, error=error, email=email)
    response.headers.update(headers or {})
    return response


async def login_form(request: Request) -> Response:
    if await current_agent(request) is not None:
        return RedirectResponse("/console", status_code=303)
    return login_page(request)


async def login(request: Request) -> Response:
    services: Services = request.app.state.services
    email, password, wants_json = await login_credentials(request)
    email = email.strip().lower()[:254]
    if not wants_json:
        try:
            await check_csrf(request)
        except NameplateError as exc:
            return login_page(request, exc.status, exc.message, email)
    wait = await throttle(services, email, client_ip(request))
    if wait > 0:
        retry_after = max(1, math.ceil(wait))
        headers = {"Retry-After": str(retry_after)}
        if not wants_json:
            minutes = math.ceil(retry_after / 60)
            message = f"Too many log-in attempts. Try again in {minutes} minute{'s' if minutes != 1 else ''}."
            return login_page(request, 429, message, email, headers)
        return error_response(429, ErrorCode.rate_limited, "too many log-in attempts; try again later", headers=headers)
    agent = await authenticate(services, email, password[:1024])
    if agent is None:
        await throttle(services, email, client_ip(request), failed=True)
        if not wants_json:
            return login_page(request, 401, "That e-mail and password do not match.", email)
        return error_response(401, ErrorCode.bad_credentials, "that e-mail and password do not match")
    request.session.clear()
    request.session.update(session_payload(agent.id, agent.session_version))
    if wants_json:
        return JSONResponse({"agent": {**agent_card(agent), "role": agent.role}})
    return RedirectResponse("/console", status_code=303)


async def logout(request: Request) -> Response:
    """Always CSRF-checked (form field or X-CSRF-Token header): a foreign page must not sign agents out."""
    await check_csrf(request)
    request.session.clear()
    if wants_json_body(request) or "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"ok": True})
    return RedirectResponse("/login", status_code=303)


routes = [
    Route("/login", login_form, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
]

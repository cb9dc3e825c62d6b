"""What every console page shares: templates, the signed-in agent, CSRF protection, role checks."""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from nameplate.assets import CONSOLE_DIR
from nameplate.errors import Forbidden, NameplateError
from nameplate.protocol.vocabulary import ErrorCode
from nameplate.realtime.agent import session_agent
from nameplate.services import Services
from nameplate.store.models import Agent, Role

templates = Environment(
    loader=FileSystemLoader(CONSOLE_DIR / "templates"),
    # Everything people type reaches these pages: autoescape is on for every template.
    autoescape=select_autoescape(default=True, default_for_string=True),
)
CSRF_SESSION_KEY = "csrf"
CSRF_FORM_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def csrf_token(request: Request) -> str:
    """The session's CSRF token, created on first use; forms and fetch() calls send it back."""
    token = request.session.get(CSRF_SESSION_KEY)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session[CSRF_SESSION_KEY] = token
    return token


async def check_csrf(request: Request) -> None:
    """Refuse a state-changing request whose token (form field or header) does not match the session's."""
    expected = request.session.get(CSRF_SESSION_KEY)
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get(CSRF_FORM_FIELD)
        sent = value if isinstance(value, str) else None
    if not isinstance(expected, str) or not sent or not hmac.compare_digest(expected, sent):
        raise NameplateError(
            ErrorCode.csrf, "this form has expired or did not come from Nameplate; reload and try again", 403
        )


async def current_agent(request: Request) -> Agent | None:
    return await session_agent(services_of(request), request.session)


async def require_agent(request: Request, *roles: Role) -> Agent:
    """The signed-in agent (optionally with one of `roles`), else a 401/403 NameplateError."""
    agent = await current_agent(request)
    if agent is None:
        raise NameplateError(ErrorCode.unauthorized, "log in first", 401)
    if roles and agent.role not in roles:
        raise Forbidden("your role does not allow this")
    return agent


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = templates.get_template(template).render(request=request, csrf_token=csrf_token(request), **context)
    return HTMLResponse(
        html,
        status_code=status,
        headers={
            # Pages are never framed and run only our own scripts; inline script is not allowed.
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
            "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "same-origin",
        },
    )


def login_redirect() -> Response:
    return RedirectResponse("/login", status_code=303)

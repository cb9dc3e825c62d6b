"""create_app(settings): routes and lifespan wiring, no business logic."""

from __future__ import annotations

import contextlib
import gc
import logging
import sys
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import BaseRoute, Mount, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from nameplate.assets import CONSOLE_DIR
from nameplate.config import Settings
from nameplate.errors import NameplateError
from nameplate.realtime.agent import agent_endpoint
from nameplate.realtime.visitor import visitor_endpoint
from nameplate.services import Services
from nameplate.web import (
    admin,
    api,
    audit,
    console,
    customers_api,
    insight,
    integrations,
    login,
    mail,
    supervisor,
    widget,
)
from nameplate.web.responses import nameplate_error_handler

SESSION_COOKIE = "nameplate_session"
# 12 hours: a working day and some; an agent logs in again the next morning.
SESSION_MAX_AGE_SECONDS = 12 * 3600


VISITOR_SOCKET_PATH = "/ws/visitor"


class NameplateApp(Starlette):
    """Starlette, except that visitor sockets go straight to their endpoint.

    Each layer of the middleware stack (errors, sessions, exceptions, router, route) keeps a coroutine
    frame alive for as long as its request lasts: nothing for a page, but ~5 KiB for every idle visitor
    socket, held for hours. The visitor endpoint needs none of them — no session cookie, and it turns its
    own errors into `error` frames and close codes — so it skips them.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == VISITOR_SOCKET_PATH:
            scope["app"] = self
            await visitor_endpoint(WebSocket(scope, receive, send))
            return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings | None = None, extra_routes: list[BaseRoute] | None = None, tune_process: bool = False
) -> NameplateApp:
    """`tune_process` (the served process, not tests, which share theirs): once started, move every object
    that exists to the collector's permanent generation — modules, compiled queries and caches live as long
    as the process, and without this every full collection walks them all again, a pause that lands on
    someone's message; and hand the GIL over every 0.5 ms instead of 5, so the SQLite writer thread is not
    kept waiting by a busy event loop."""
    settings = settings or Settings.from_env()
    services = Services.build(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await services.start()
        if tune_process:
            gc.collect()
            gc.freeze()
            sys.setswitchinterval(0.0005)
        try:
            yield
        finally:
            await services.stop()

    routes: list[BaseRoute] = [
        # Served by NameplateApp directly; the route stays so that the URL is listed with the others.
        WebSocketRoute(VISITOR_SOCKET_PATH, visitor_endpoint),
        WebSocketRoute("/ws/agent", agent_endpoint),
        *api.routes,
        *customers_api.routes,
        *integrations.routes,
        *login.routes,
        *widget.routes,
        *console.routes,
        # Before supervisor's /admin/agents/{agent_id}/{action}, which would take /photo for an action.
        *admin.routes,
        *audit.routes,
        *supervisor.routes,
        *insight.routes,
        *mail.routes,
        Mount("/static", app=StaticFiles(directory=CONSOLE_DIR / "static"), name="static"),
        *(extra_routes or []),
    ]
    middleware = [
        Middleware(
            SessionMiddleware,
            secret_key=settings.secret_key,
            session_cookie=SESSION_COOKIE,
            max_age=SESSION_MAX_AGE_SECONDS,
            same_site="lax",
            https_only=settings.cookie_secure,
        )
    ]
    app = NameplateApp(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={NameplateError: nameplate_error_handler},
    )
    app.state.services = services
    app.state.settings = settings
    logging.getLogger("nameplate").setLevel(settings.log_level.upper())
    return app

"""The public JSON API: visitor tokens for the widget, health checks, agent photos."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nameplate.errors import NameplateError, NotFound
from nameplate.people.photos import load_photo
from nameplate.protocol.vocabulary import ErrorCode
from nameplate.services import Services
from nameplate.store.models import Site
from nameplate.web.responses import error_response, read_json


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def cors_headers(site: Site | None, origin: str | None) -> dict[str, str]:
    """Echo the Origin back only when the site allows it: the browser then lets the widget read the reply."""
    if origin is None or site is None or not site.origin_allowed(origin):
        return {}
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}


async def preflight(request: Request) -> Response:
    # The site is in the body, which a preflight lacks; the real request is checked against the site.
    return Response(
        status_code=204,
        headers={
            "Access-Control-Allow-Origin": request.headers.get("origin", "*"),
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type",
            "Access-Control-Max-Age": "600",
            "Vary": "Origin",
        },
    )


async def create_visitor(request: Request) -> Response:
    """POST /api/v1/visitors {site} → {token, customer_id}: a new anonymous visitor for the widget."""
    services = _services(request)
    data = await read_json(request, max_bytes=4096)
    key = data.get("site")
    if not isinstance(key, str) or not key:
        raise NameplateError(ErrorCode.invalid, "site (the site's public key) is required", 422)
    site = await services.directory.site_by_key(key)
    if site is None:
        raise NotFound("unknown site key")
    origin = request.headers.get("origin")
    if not site.origin_allowed(origin):
        return error_response(403, ErrorCode.origin, "this page's origin may not use this site's chat")
    customer, token = await services.customers.create_visitor(site)
    return JSONResponse(
        {"token": token, "customer_id": customer.id}, status_code=201, headers=cors_headers(site, origin)
    )


async def healthz(request: Request) -> Response:
    """Liveness: the process answers. Also says whether the broker is reachable right now."""
    broker_ok = await _services(request).broker.healthy()
    return JSONResponse({"ok": True, "broker": "up" if broker_ok else "down"})


async def readyz(request: Request) -> Response:
    """Readiness: store and broker both reachable; a load balancer should route here only then."""
    services = _services(request)
    store_ok = await services.store_ready()
    broker_ok = await services.broker.healthy()
    body = {"store": "up" if store_ok else "down", "broker": "up" if broker_ok else "down"}
    return JSONResponse(body, status_code=200 if store_ok and broker_ok else 503)


async def agent_photo(request: Request) -> Response:
    services = _services(request)
    photo = await load_photo(services.sessions, request.path_params["agent_id"])
    if photo is None:
        return error_response(404, ErrorCode.not_found, "no photo")
    return Response(
        photo.data,
        media_type=photo.content_type,
        # The URL carries the photo version, so a cached copy is never stale.
        headers={
            "Cache-Control": "public, max-age=31536000, immutable",
            "Access-Control-Allow-Origin": "*",
            "Cross-Origin-Resource-Policy": "cross-origin",
        },
    )


routes = [
    Route("/api/v1/visitors", create_visitor, methods=["POST"]),
    Route("/api/v1/visitors", preflight, methods=["OPTIONS"]),
    Route("/healthz", healthz),
    Route("/readyz", readyz),
    Route("/agents/{agent_id}/photo", agent_photo),
]

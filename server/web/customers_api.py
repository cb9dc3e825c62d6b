"""The server-to-server customer API: post events from other channels, read a customer's timeline.

Authenticated with a site API key (`Authorization: Bearer np_...`). A customer is named by the
website's own user id (`external_id`, the one passed to identify); another site's customer is 404.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nameplate.actions.customers import post_customer_event
from nameplate.errors import NameplateError, NotFound
from nameplate.protocol.vocabulary import ErrorCode
from nameplate.services import Services
from nameplate.store.models import Customer, Site
from nameplate.web.responses import read_json


async def _authorised(request: Request) -> tuple[Services, Site, Customer]:
    services: Services = request.app.state.services
    header = request.headers.get("authorization", "")
    key = header[7:].strip() if header.lower().startswith("bearer ") else None
    site = await services.api_keys.site_for(key)
    if site is None:
        raise NameplateError(ErrorCode.unauthorized, "send a valid site API key: Authorization: Bearer np_…", 401)
    customer = await services.timeline.customer_by_external_id(site.id, request.path_params["external_id"])
    if customer is None:
        raise NotFound("no customer with that id on this site")
    return services, site, customer


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise NameplateError(ErrorCode.invalid, f"{name} must be a whole number", 422) from exc


async def post_event(request: Request) -> Response:
    services, site, customer = await _authorised(request)
    data = await read_json(request, max_bytes=16 * 1024)
    item, created = await post_customer_event(services, site, customer, data)
    return JSONResponse({"event": item, "created": created}, status_code=201 if created else 200)


async def get_timeline(request: Request) -> Response:
    services, _site, customer = await _authorised(request)
    limit = _int_param(request, "limit", 20)
    offset = _int_param(request, "offset", 0)
    items = await services.timeline.items(customer.id, limit=limit, offset=offset)
    return JSONResponse({"items": items, "limit": limit, "offset": offset, "next_offset": offset + len(items)})


routes = [
    Route("/api/v1/customers/{external_id}/events", post_event, methods=["POST"]),
    Route("/api/v1/customers/{external_id}/events", get_timeline, methods=["GET"]),
    Route("/api/v1/customers/{external_id}/timeline", get_timeline, methods=["GET"]),
]

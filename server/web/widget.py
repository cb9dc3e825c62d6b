"""Serves the embeddable widget script and the demo shop page that shows it in use."""

from __future__ import annotations

import gzip
import hashlib

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from nameplate.assets import WIDGET_DIR
from nameplate.demo.seed import DEMO_CUSTOMER, DEMO_SITE_KEY
from nameplate.errors import NotFound
from nameplate.people.credentials import identity_hash

_templates = Environment(loader=FileSystemLoader(WIDGET_DIR), autoescape=select_autoescape(["html"]))


# The script compressed once per version: every page view asks for it, and gzip cuts it to about a third.
_gzipped: dict[str, bytes] = {}


async def widget_js(request: Request) -> Response:
    """The widget script. Cached briefly and revalidated by ETag, so a new release reaches pages quickly;
    gzip-encoded for the browsers that accept it (all of them)."""
    body = (WIDGET_DIR / "nameplate.js").read_bytes()
    digest = hashlib.sha256(body).hexdigest()[:20]
    compressed = "gzip" in request.headers.get("accept-encoding", "")
    etag = f'"{digest}-gz"' if compressed else f'"{digest}"'
    headers = {
        "ETag": etag,
        "Vary": "Accept-Encoding",
        "Cache-Control": "public, max-age=300, stale-while-revalidate=86400",
        # Any site may load the script; what it can do is decided per site when it connects.
        "Access-Control-Allow-Origin": "*",
        "Cross-Origin-Resource-Policy": "cross-origin",
        "X-Content-Type-Options": "nosniff",
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    if compressed:
        if digest not in _gzipped:
            _gzipped.clear()  # one version at a time: a new release replaces the old one
            _gzipped[digest] = gzip.compress(body, 9)
        body = _gzipped[digest]
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type="text/javascript; charset=utf-8", headers=headers)


async def demo_page(request: Request) -> Response:
    """A small shop page with the widget tag on it, for the site named by ?site= or the first site."""
    services = request.app.state.services
    key = request.query_params.get("site")
    if not key:
        sites = await services.directory.sites()
        key = sites[0].public_key if sites else ""
    html = _templates.get_template("demo.html").render(site_key=key, widget_src="/widget.js")
    return HTMLResponse(html)


async def signed_in_demo_page(request: Request) -> Response:
    """The demo shop as its signed-in customer sees it: the page passes the shop's user to
    `Nameplate.identify` with user_hash = HMAC(site secret, user_id) computed here, as a real shop's
    server would. Only for the demo site: a hash for a fixed user id must never exist for a real one."""
    site = await request.app.state.services.directory.site_by_key(DEMO_SITE_KEY)
    if site is None:
        raise NotFound("the signed-in demo needs the demo shop (nameplate demo)")
    who = {**DEMO_CUSTOMER, "user_hash": identity_hash(site.secret, DEMO_CUSTOMER["user_id"])}
    html = _templates.get_template("demo.html").render(site_key=site.public_key, widget_src="/widget.js", who=who)
    return HTMLResponse(html)


async def root(_request: Request) -> Response:
    return RedirectResponse("/demo", status_code=307)


routes = [
    Route("/widget.js", widget_js),
    Route("/demo", demo_page),
    Route("/demo/signed-in", signed_in_demo_page),
    Route("/", root),
]

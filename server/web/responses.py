"""JSON error responses in the one shape every endpoint uses: {"error": {"code", "message"}}."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from nameplate.errors import NameplateError
from nameplate.protocol.inbound import reject_nul
from nameplate.protocol.vocabulary import ErrorCode


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


async def nameplate_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, NameplateError)
    body: dict[str, Any] = {"code": exc.code, "message": exc.message}
    fields = getattr(exc, "fields", None)
    if fields:
        body["fields"] = fields
    return JSONResponse({"error": body}, status_code=exc.status)


async def read_json(request: Request, max_bytes: int = 64 * 1024) -> dict[str, Any]:
    """The request body as a JSON object, or a 400/413 NameplateError explaining what is wrong."""
    body = await request.body()
    if len(body) > max_bytes:
        raise NameplateError(ErrorCode.too_large, f"request bodies are limited to {max_bytes} bytes", 413)
    reject_nul(body)
    try:
        data = json.loads(body or b"{}")
    except ValueError as exc:
        raise NameplateError(ErrorCode.bad_json, "the body must be a JSON object") from exc
    if not isinstance(data, dict):
        raise NameplateError(ErrorCode.bad_json, "the body must be a JSON object")
    return data

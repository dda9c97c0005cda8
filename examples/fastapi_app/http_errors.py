"""Every error the example answers is ``{code, message}``: the library's
refusals, its own (401, 403, 404), FastAPI's and Starlette's (400, 404, 405,
422), database trouble (503 with ``Retry-After``) and anything unexpected
(500).  The bodies are declared in OpenAPI by :func:`responses`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from extension_fsm import ExtensionError
from extension_fsm.errors import StorageError

__all__ = [
    "BODY_NOT_PARSED",
    "RETRY_AFTER_SECONDS",
    "ErrorBody",
    "install_error_handlers",
    "responses",
]

_log = logging.getLogger("fastapi_app")

#: how long a client should wait before retrying after a 503
RETRY_AFTER_SECONDS = 2

_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}

#: FastAPI's answer to a body it cannot even decode (bytes that are not UTF-8)
BODY_NOT_PARSED = (
    'A body that cannot be decoded (BAD_REQUEST "There was an error parsing the body")'
)

_DESCRIPTIONS = {
    400: BODY_NOT_PARSED + "; or a first-session discount payment"
    " (FIRST_SESSION_DISCOUNT_NOT_ALLOWED)",
    401: "No valid bearer token (answered before any body is read)",
    403: "The caller is not the party who may do this",
    404: "Not found (session, payment or extension)",
    409: "Refused in the current state (pending, resolved, session not active, contention)",
    413: "The body is over EXTENSION_FSM_MAX_BODY_BYTES (PAYLOAD_TOO_LARGE); not read",
    422: "Invalid body or path (VALIDATION_ERROR)",
    500: "Unexpected failure",
    503: "The database is unavailable; retry after Retry-After seconds",
}


class ErrorBody(BaseModel):
    """The body of every error response."""

    code: str
    message: str


def responses(
    *statuses: int, descriptions: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, each an :class:`ErrorBody`
    (``descriptions``: a route's own text for some of them)."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        text = (descriptions or {}).get(status, _DESCRIPTIONS[status])
        entry: dict[str, Any] = {"model": ErrorBody, "description": text}
        if status == 503:
            entry["headers"] = {
                "Retry-After": {"description": "seconds", "schema": {"type": "integer"}}
            }
        out[status] = entry
    return out


def _text(value: str) -> str:
    """``value`` as text every JSON encoder takes (a lone surrogate is escaped)."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """``{code, message}`` with ``status``."""
    return JSONResponse(
        {"code": code, "message": _text(message)}, status, headers=dict(headers or {})
    )


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception a route can raise to ``{code, message}``."""

    @app.exception_handler(ExtensionError)
    async def extension_error(_: Request, err: ExtensionError) -> JSONResponse:
        headers = None
        if isinstance(err, StorageError):
            _log.warning("database trouble: %s (%r)", err.message, err.__cause__)
            if err.retryable:
                headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        return error_response(err.status_code, err.code.value, err.message, headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(err.status_code, "HTTP_ERROR")
        return error_response(err.status_code, code, str(err.detail), err.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
        errors = err.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = f"{where}: {first.get('msg', 'invalid request')}"
        return error_response(422, "VALIDATION_ERROR", message)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, err: Exception) -> JSONResponse:
        _log.error("unhandled error", exc_info=err)
        return error_response(500, "INTERNAL_ERROR", "Internal error")

"""The baseline of the HTTP case: the example's two extension routes written by
hand, the way a competent engineer would without the library.

- FastAPI, the same routes and bodies as ``examples/fastapi_app/app.py``:
  ``POST /chat/{id}/extensions`` (customer) and
  ``POST /chat/{id}/extensions/{ext}/respond`` (mitra);
- the same auth: ``Authorization: Bearer`` with an HS256 JWT, claims
  ``sub``, ``role``, ``exp`` required;
- asyncpg with one fixed pool (``min_size == max_size``, opened at start-up);
- per call one transaction of 4 naive statements, compare-and-set on status,
  and nothing else: no audit log, no outbox, no notifications, no timers.

Run: ``RAW_APP_DATABASE_URL=postgresql://... RAW_APP_JWT_SECRET=...
uvicorn bench.raw_app:create_app --factory`` (the bench starts it itself).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import asyncpg
import jwt
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]


class RequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    duration_minutes: Int32
    price: Int32
    extension_payment_session_id: Annotated[str, Field(max_length=200)] | None = None


class RespondBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    accepted: bool


class Refused(Exception):
    """An answer other than success: ``{code, message}`` with its status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _caller(request: Request) -> tuple[str, str]:
    """(role, user id) from the bearer token; 401 without a valid one."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Refused(401, "UNAUTHORIZED", "missing bearer token")
    try:
        claims = jwt.decode(
            token.strip(),
            request.app.state.secret,
            algorithms=["HS256"],
            options={"require": ["exp", "sub", "role"]},
        )
    except jwt.PyJWTError as err:
        raise Refused(401, "UNAUTHORIZED", f"invalid token: {err}") from err
    role, sub = claims.get("role"), claims.get("sub")
    if role not in ("customer", "mitra") or not isinstance(sub, str) or not sub:
        raise Refused(401, "UNAUTHORIZED", "invalid token")
    return role, sub


Caller = Annotated[tuple[str, str], Depends(_caller)]


def _json(row: asyncpg.Record) -> dict[str, Any]:
    def iso(v: datetime | None) -> str | None:
        return v.isoformat() if v is not None else None

    return {
        "id": row["id"],
        "session_id": row["session_id"],
        "status": row["status"],
        "duration_minutes": row["duration_minutes"],
        "price": row["price"],
        "payment_session_id": row["payment_session_id"],
        "requested_at": iso(row["requested_at"]),
        "expires_at": iso(row["expires_at"]),
        "responded_at": iso(row["responded_at"]),
        "via_timeout": row["via_timeout"],
    }


_RETURNING = (
    "RETURNING id, session_id, status, duration_minutes, price, payment_session_id, "
    "requested_at, expires_at, responded_at, via_timeout"
)


def create_app() -> FastAPI:
    """The app; settings from ``RAW_APP_*`` environment variables."""
    url = os.environ["RAW_APP_DATABASE_URL"]
    pool_size = int(os.environ.get("RAW_APP_POOL_SIZE", "10"))
    timeout_s = int(os.environ.get("RAW_APP_TIMEOUT_SECONDS", "10"))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.secret = os.environ["RAW_APP_JWT_SECRET"]
        app.state.pool = await asyncpg.create_pool(
            url, min_size=pool_size, max_size=pool_size, command_timeout=30
        )
        try:
            yield
        finally:
            await app.state.pool.close()

    app = FastAPI(title="raw baseline", lifespan=lifespan)

    @app.exception_handler(Refused)
    async def refused(_: Request, err: Refused) -> JSONResponse:
        return JSONResponse({"code": err.code, "message": err.message}, err.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse({"code": "VALIDATION_ERROR", "message": str(err.errors()[:1])}, 422)

    @app.post("/chat/{session_id}/extensions", status_code=201)
    async def request_extension(
        session_id: str, body: RequestBody, who: Caller, request: Request
    ) -> dict[str, Any]:
        role, user = who
        if role != "customer":
            raise Refused(403, "FORBIDDEN", "only the customer may do this")
        now = datetime.now(UTC)
        pool: asyncpg.Pool = request.app.state.pool
        async with pool.acquire() as conn, conn.transaction():
            mitra = await conn.fetchval(  # 1: pause the session (compare-and-set)
                "UPDATE chat_sessions SET status = 'extending' WHERE id = $1 AND "
                "customer_id = $2 AND status IN ('active', 'closing') RETURNING mitra_id",
                session_id,
                user,
            )
            if mitra is None:
                raise Refused(409, "SESSION_NOT_ACTIVE", "session not active")
            usable = await conn.fetchval(  # 2: the payment
                "SELECT true FROM payment_sessions WHERE id = $1 AND customer_id = $2 AND "
                "status = 'confirmed' AND is_extension AND NOT is_first_session_discount",
                body.extension_payment_session_id,
                user,
            )
            if not usable:
                raise Refused(400, "VALIDATION_ERROR", "payment not usable")
            in_use = await conn.fetchval(  # 3: no live extension on that payment
                "SELECT true FROM extensions WHERE payment_session_id = $1 AND "
                "status IN ('pending', 'accepted')",
                body.extension_payment_session_id,
            )
            if in_use:
                raise Refused(409, "PAYMENT_IN_USE", "payment already used")
            row = await conn.fetchrow(  # 4: the extension
                "INSERT INTO extensions (id, session_id, duration_minutes, price, "
                "payment_session_id, status, requested_at, expires_at, timeout_seconds, "
                "via_timeout) VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, false) "
                + _RETURNING,
                str(uuid.uuid4()),
                session_id,
                body.duration_minutes,
                body.price,
                body.extension_payment_session_id,
                now,
                now + timedelta(seconds=timeout_s),
                timeout_s,
            )
        return _json(row)

    @app.post("/chat/{session_id}/extensions/{extension_id}/respond")
    async def respond(
        session_id: str, extension_id: str, body: RespondBody, who: Caller, request: Request
    ) -> dict[str, Any]:
        role, user = who
        if role != "mitra":
            raise Refused(403, "FORBIDDEN", "only the mitra may do this")
        now = datetime.now(UTC)
        status = "accepted" if body.accepted else "rejected"
        pool: asyncpg.Pool = request.app.state.pool
        async with pool.acquire() as conn, conn.transaction():
            ext = await conn.fetchrow(  # 1: the extension (compare-and-set, deadline)
                "UPDATE extensions SET status = $1, responded_at = $2, via_timeout = false "
                "WHERE id = $3 AND session_id = $4 AND status = 'pending' AND expires_at > $2 "
                + _RETURNING,
                status,
                now,
                extension_id,
                session_id,
            )
            if ext is None:
                raise Refused(409, "EXTENSION_RESOLVED", "extension not pending")
            paid = await conn.execute(  # 2: the payment
                "UPDATE payment_sessions SET status = $1 WHERE id = $2 AND status = 'confirmed'",
                "consumed" if body.accepted else "failed",
                ext["payment_session_id"],
            )
            if paid != "UPDATE 1":
                raise Refused(409, "INVALID_STATE", "payment not confirmed")
            customer = await conn.fetchval(  # 3: the session resumes (and grows)
                "UPDATE chat_sessions SET status = 'active', closure_deadline = NULL, "
                "expires_at = CASE WHEN $1 THEN GREATEST(expires_at, $2) + "
                "make_interval(mins => $3) ELSE expires_at END "
                "WHERE id = $4 AND mitra_id = $5 AND status = 'extending' RETURNING customer_id",
                body.accepted,
                now,
                ext["duration_minutes"],
                session_id,
                user,
            )
            if customer is None:
                raise Refused(403, "FORBIDDEN", "not this session's mitra")
            if body.accepted:  # 4: the ledger
                await conn.execute(
                    "INSERT INTO customer_transactions (customer_id, session_id, extension_id, "
                    "type, amount, created_at) VALUES ($1, $2, $3, 'extension', $4, $5)",
                    customer,
                    session_id,
                    extension_id,
                    ext["price"],
                    now,
                )
        return _json(ext)

    return app

"""The HTTP and WebSocket routes of a chat backend that uses extension_fsm.

Run: ``EXTENSION_FSM_JWT_SECRET=... uvicorn examples.fastapi_app.app:app``
(see README.md here).  Every route takes the caller's identity from the
bearer token; the body carries only what the caller asks for.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from extension_fsm import Extension, ExtensionError, Participant
from extension_fsm.wire import js_date

from .auth import Identity, Unauthorized, bearer_token, decode_token
from .dev import seed_demo
from .settings import Settings
from .wiring import Runtime, start_runtime

__all__ = ["app", "create_app"]

_log = logging.getLogger("fastapi_app")

Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]


class ExtensionRequestBody(BaseModel):
    """``POST /chat/{session_id}/extensions``."""

    model_config = ConfigDict(extra="forbid")
    duration_minutes: Int32
    price: Int32
    extension_payment_session_id: Annotated[str, Field(max_length=200)] | None = None


class RespondBody(BaseModel):
    """``POST /chat/{session_id}/extensions/{extension_id}/respond``."""

    model_config = ConfigDict(extra="forbid")
    accepted: bool


class DeviceBody(BaseModel):
    """``PUT /devices/me``: the caller's FCM registration token."""

    model_config = ConfigDict(extra="forbid")
    token: Annotated[str, Field(min_length=1, max_length=4096)]


def _iso(value: datetime | None) -> str | None:
    # The replaced service's clients parse ``Date.toJSON()`` timestamps.
    return js_date(value) if value is not None else None


def extension_json(ext: Extension) -> dict[str, Any]:
    """The extension row as the API returns it."""
    return {
        "id": ext.id,
        "session_id": ext.session_id,
        "status": ext.status.value,
        "duration_minutes": ext.duration_minutes,
        "price": ext.price,
        "payment_session_id": ext.payment_session_id,
        "requested_at": _iso(ext.requested_at),
        "expires_at": _iso(ext.expires_at),
        "responded_at": _iso(ext.responded_at),
        "via_timeout": ext.via_timeout,
    }


def runtime_of(request: Request) -> Runtime:
    """The app's runtime (built in the lifespan)."""
    rt: Runtime = request.app.state.runtime
    return rt


def identity(request: Request) -> Identity:
    """The caller, from the bearer token only; 401 without a valid one."""
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("missing bearer token")
    return decode_token(token, runtime_of(request).settings.jwt_secret)


def require(role: Participant, who: Identity) -> None:
    """403 unless the caller has ``role``."""
    if who.role is not role:
        raise HTTPException(403, f"only the {role.value} may do this")


Who = Annotated[Identity, Depends(identity)]
Rt = Annotated[Runtime, Depends(runtime_of)]


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app; ``settings`` default to the environment's."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await start_runtime(settings or Settings.from_env())
        app.state.runtime = runtime
        if runtime.settings.dev_seed:
            await seed_demo(runtime)
        try:
            yield
        finally:
            await runtime.aclose()

    app = FastAPI(title="extension_fsm example host", lifespan=lifespan)

    @app.exception_handler(ExtensionError)
    async def extension_error(_: Request, err: ExtensionError) -> JSONResponse:
        return JSONResponse({"code": err.code.value, "message": err.message}, err.status_code)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, err: HTTPException) -> JSONResponse:
        code = {401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND"}.get(
            err.status_code, "ERROR"
        )
        return JSONResponse(
            {"code": code, "message": str(err.detail)}, err.status_code, headers=err.headers
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = f"{where}: {first.get('msg', 'invalid request')}"
        return JSONResponse({"code": "VALIDATION_ERROR", "message": message}, 422)

    @app.post("/chat/{session_id}/extensions", status_code=201)
    async def request_extension(
        session_id: str, body: ExtensionRequestBody, who: Who, rt: Rt
    ) -> dict[str, Any]:
        require(Participant.CUSTOMER, who)
        ext = await rt.service.request_extension(
            session_id=session_id,
            customer_id=who.user_id,
            duration_minutes=body.duration_minutes,
            price=body.price,
            extension_payment_session_id=body.extension_payment_session_id,
        )
        return extension_json(ext)

    @app.post("/chat/{session_id}/extensions/{extension_id}/respond")
    async def respond(
        session_id: str, extension_id: str, body: RespondBody, who: Who, rt: Rt
    ) -> dict[str, Any]:
        require(Participant.MITRA, who)
        ext = await rt.service.respond_to_extension(
            extension_id=extension_id,
            session_id=session_id,
            mitra_id=who.user_id,
            accepted=body.accepted,
        )
        return extension_json(ext)

    @app.get("/chat/{session_id}/info")
    async def info(session_id: str, who: Who, rt: Rt) -> dict[str, Any]:
        async with rt.store.unit_of_work() as uow:
            session = await uow.sessions.get(session_id)
        if session is None or who.user_id != (
            session.customer_id if who.role is Participant.CUSTOMER else session.mitra_id
        ):
            raise HTTPException(404, "Session not found")
        pending = await rt.service.pending_extension(session_id)
        return {
            "session_id": session.id,
            "status": session.status.value,
            "expires_at": _iso(session.expires_at),
            "pending_extension": pending.to_json() if pending else None,
        }

    @app.put("/devices/me", status_code=204)
    async def register_device(body: DeviceBody, who: Who, rt: Rt) -> None:
        tokens = rt.device_tokens.by_user.setdefault((who.role, who.user_id), [])
        if body.token not in tokens:
            tokens.append(body.token)

    @app.websocket("/ws/chat/{session_id}")
    async def chat_socket(ws: WebSocket, session_id: str) -> None:
        rt: Runtime = ws.app.state.runtime
        token = bearer_token(ws)
        try:
            if token is None:
                raise Unauthorized("missing token")
            who = decode_token(token, rt.settings.jwt_secret)
        except Unauthorized:
            await ws.close(code=1008, reason="unauthorized")
            return
        async with rt.store.unit_of_work() as uow:
            session = await uow.sessions.get(session_id)
        owner = None
        if session is not None:
            owner = session.customer_id if who.role is Participant.CUSTOMER else session.mitra_id
        if owner != who.user_id:
            await ws.close(code=1008, reason="not a participant of this session")
            return
        await ws.accept()
        await rt.register(ws, who.role, who.user_id, session_id)
        try:
            while True:
                await ws.receive_text()  # any frame is a heartbeat in this example
                if who.role is Participant.MITRA:
                    await rt.heartbeat(who.user_id)
        except WebSocketDisconnect:
            pass
        finally:
            await rt.unregister(ws, who.role, who.user_id)

    return app


#: ``uvicorn examples.fastapi_app.app:app``: settings are read from the
#: environment when the app starts, so importing this module needs no secret.
app = create_app()

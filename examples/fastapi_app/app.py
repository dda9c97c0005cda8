"""The HTTP and WebSocket routes of a chat backend that uses extension_fsm.

Run: ``EXTENSION_FSM_JWT_SECRET=... uvicorn examples.fastapi_app.app:app``
(see README.md here).  Every route takes the caller's identity from the
bearer token; the body carries only what the caller asks for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect

from extension_fsm import Extension, ExtensionError, Participant
from extension_fsm.wire import js_date

from .auth import Identity, Unauthorized, bearer_token, decode_token
from .dev import seed_demo
from .http_errors import BODY_NOT_PARSED, install_error_handlers, responses
from .limits import TOO_MANY_SOCKETS_CLOSE, BoundedBodies
from .models import (
    DeviceBody,
    ExtensionOut,
    ExtensionRequestBody,
    InfoOut,
    PathId,
    RespondBody,
)
from .ops import add_ops_routes
from .settings import OneLineSettingsErrors, Settings
from .wiring import Runtime, start_runtime

__all__ = ["TOKEN_EXPIRED_CLOSE", "TOO_MANY_SOCKETS_CLOSE", "app", "create_app"]

_log = logging.getLogger("fastapi_app")


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


#: the close code of a WebSocket whose token expired while it was open
TOKEN_EXPIRED_CLOSE = 4401


async def token_expired(expires_at: float | None, check_every: float) -> None:
    """Return once the token's ``exp`` has passed (never, without one), looking
    at the clock at least every ``check_every`` seconds."""
    if expires_at is None:
        await asyncio.Event().wait()
        return
    while True:
        left = expires_at - time.time()
        if left <= 0:
            return
        await asyncio.sleep(min(left, check_every))


# The dependencies are coroutines: FastAPI runs a plain ``def`` dependency in
# a worker thread, two thread hops per request for a few microseconds of work.
async def runtime_of(request: Request) -> Runtime:
    """The app's runtime (built in the lifespan)."""
    rt: Runtime = request.app.state.runtime
    return rt


async def identity(request: Request) -> Identity:
    """The caller, from the bearer token only; 401 without a valid one."""
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("missing bearer token")
    rt: Runtime = request.app.state.runtime
    return decode_token(token, rt.settings.jwt_secret)


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
    app.add_middleware(BoundedBodies)  # no body read without a token, none over the limit
    app.add_middleware(OneLineSettingsErrors)  # a bad setting: one line, no traceback
    add_ops_routes(app)  # GET /metrics, GET /healthz

    install_error_handlers(app)

    @app.post(
        "/chat/{session_id}/extensions",
        status_code=201,
        response_model=ExtensionOut,
        responses=responses(400, 401, 403, 404, 409, 413, 422, 500, 503),
    )
    async def request_extension(
        session_id: PathId, body: ExtensionRequestBody, who: Who, rt: Rt
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

    @app.post(
        "/chat/{session_id}/extensions/{extension_id}/respond",
        response_model=ExtensionOut,
        responses=responses(
            400, 401, 403, 409, 413, 422, 500, 503, descriptions={400: BODY_NOT_PARSED}
        ),
    )
    async def respond(
        session_id: PathId, extension_id: PathId, body: RespondBody, who: Who, rt: Rt
    ) -> dict[str, Any]:
        require(Participant.MITRA, who)
        ext = await rt.service.respond_to_extension(
            extension_id=extension_id,
            session_id=session_id,
            mitra_id=who.user_id,
            accepted=body.accepted,
        )
        return extension_json(ext)

    @app.get(
        "/chat/{session_id}/info",
        response_model=InfoOut,
        responses=responses(401, 404, 422, 500, 503),
    )
    async def info(session_id: PathId, who: Who, rt: Rt) -> dict[str, Any]:
        session = await rt.service.session(session_id)
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

    @app.put(
        "/devices/me",
        status_code=204,
        responses=responses(400, 401, 413, 422, 503, descriptions={400: BODY_NOT_PARSED}),
    )
    async def register_device(body: DeviceBody, who: Who, rt: Rt) -> None:
        # The most recent MAX_DEVICE_TOKENS per user: a re-registered token
        # moves to the newest, the oldest ones are forgotten.
        await rt.register_device(who.role, who.user_id, body.token)

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
        if not rt.socket_slots.take(who.role, who.user_id):
            await ws.accept()  # a close code reaches the client only after the handshake
            await ws.close(code=TOO_MANY_SOCKETS_CLOSE, reason="too many sockets")
            return
        try:
            await _chat_socket(ws, rt, who, session_id)
        finally:
            rt.socket_slots.give_back(who.role, who.user_id)

    async def _chat_socket(ws: WebSocket, rt: Runtime, who: Identity, session_id: str) -> None:
        """A participant's chat socket, once its token is checked and its slot taken."""
        try:
            session = await rt.service.session(session_id)  # checks the id too
        except ExtensionError as err:
            # 1013: try again later (database trouble); 1008: a bad session id
            await ws.close(code=1013 if err.status_code == 503 else 1008, reason=err.code.value)
            return
        owner = None
        if session is not None:
            owner = session.customer_id if who.role is Participant.CUSTOMER else session.mitra_id
        if owner != who.user_id:
            await ws.close(code=1008, reason="not a participant of this session")
            return
        await ws.accept()
        await rt.register(ws, who.role, who.user_id, session_id)

        async def receive_frames() -> None:
            with contextlib.suppress(WebSocketDisconnect):
                while True:
                    await ws.receive_text()  # any frame is a heartbeat in this example
                    if who.role is Participant.MITRA:
                        await rt.heartbeat(who.user_id)

        reader = asyncio.create_task(receive_frames())
        expiry = asyncio.create_task(token_expired(who.expires_at, rt.settings.token_check_seconds))
        try:
            await asyncio.wait((reader, expiry), return_when=asyncio.FIRST_COMPLETED)
            if expiry.done() and not reader.done():
                reader.cancel()
                with contextlib.suppress(Exception):
                    await ws.close(code=TOKEN_EXPIRED_CLOSE, reason="token expired")
        finally:
            for task in (reader, expiry):
                task.cancel()
            await asyncio.gather(reader, expiry, return_exceptions=True)
            await rt.unregister(ws, who.role, who.user_id)

    return app


#: ``uvicorn examples.fastapi_app.app:app``: settings are read from the
#: environment when the app starts, so importing this module needs no secret.
app = create_app()

"""The example's request and response bodies.

Requests are strict: a whole number is a JSON number that holds one (``15``,
or ``15.0`` as a JavaScript client may write it, as the Node service took it;
never ``true``, ``15.5`` or ``"15"``), a boolean is ``true`` or ``false``, an
id is a string the database can hold (at most 64 characters, no NUL), and
unknown fields are refused.  The request body also takes the Node service's
field names (``requested_duration_minutes``, ``requested_price``,
``payment_session_id``), so a client written for it keeps working; one field
under both of its names is refused.  Responses are declared so that OpenAPI
describes what comes back.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import AfterValidator, AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field

from extension_fsm import ExtensionError, ExtensionStatus, SessionStatus
from extension_fsm.validation import ID_MAX_LENGTH, check_ids

__all__ = [
    "MAX_DEVICE_TOKENS",
    "DeviceBody",
    "ExtensionOut",
    "ExtensionRequestBody",
    "InfoOut",
    "PathId",
    "PendingOut",
    "RespondBody",
]

#: device tokens kept per user: the most recent ones
MAX_DEVICE_TOKENS = 10
MAX_DEVICE_TOKEN_LENGTH = 4096


def _storable(value: str) -> str:
    try:
        check_ids(id=value)
    except ExtensionError as err:
        raise ValueError(err.message) from None
    return value


def _whole(value: object) -> object:
    """A float holding a whole number (``15000.0``) as that ``int``; anything
    else as it came (the strict ``int`` check then judges it)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Int32 = Annotated[int, Field(strict=True, ge=-(2**31), le=2**31 - 1)]
#: a whole number in a request body, written as an integer or a whole float
WholeInt32 = Annotated[Int32, BeforeValidator(_whole)]
#: an id in a body
Id = Annotated[str, Field(min_length=1, max_length=ID_MAX_LENGTH), AfterValidator(_storable)]
#: an id in a path
PathId = Annotated[str, Path(min_length=1, max_length=ID_MAX_LENGTH), AfterValidator(_storable)]


class ExtensionRequestBody(BaseModel):
    """``POST /chat/{session_id}/extensions``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    duration_minutes: WholeInt32 = Field(
        validation_alias=AliasChoices("duration_minutes", "requested_duration_minutes")
    )
    price: WholeInt32 = Field(validation_alias=AliasChoices("price", "requested_price"))
    extension_payment_session_id: Id | None = Field(
        default=None,
        validation_alias=AliasChoices("extension_payment_session_id", "payment_session_id"),
    )


class RespondBody(BaseModel):
    """``POST /chat/{session_id}/extensions/{extension_id}/respond``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    accepted: bool


class DeviceBody(BaseModel):
    """``PUT /devices/me``: the caller's FCM registration token."""

    model_config = ConfigDict(extra="forbid", strict=True)
    token: Annotated[str, Field(min_length=1, max_length=MAX_DEVICE_TOKEN_LENGTH)]


class ExtensionOut(BaseModel):
    """An extension as the API returns it (timestamps ISO 8601)."""

    id: str
    session_id: str
    status: ExtensionStatus
    duration_minutes: int
    price: int
    payment_session_id: str
    requested_at: str | None
    expires_at: str | None
    responded_at: str | None
    via_timeout: bool


class PendingOut(BaseModel):
    """The pending extension a chat screen rehydrates."""

    extension_id: str
    duration_minutes: int
    price: int
    requested_at: str
    expires_at: str
    timeout_seconds: int


class InfoOut(BaseModel):
    """``GET /chat/{session_id}/info``."""

    session_id: str
    status: SessionStatus
    expires_at: str | None
    pending_extension: PendingOut | None

"""Push over Firebase Cloud Messaging (``firebase_admin.messaging``): the
:class:`~extension_fsm.ports.PushSender` port.

One push goes to every device token the host's
:class:`~extension_fsm.ports.DeviceTokens` holds for the user, in one
``send_each`` call (run in a worker thread: the Admin SDK blocks).

Multi-token semantics (a user may have a phone and a tablet):

* a token FCM calls dead (``UNREGISTERED``, ``SENDER_ID_MISMATCH``, or
  ``INVALID_ARGUMENT`` about the registration token) is reported to
  ``DeviceTokens.remove`` and never retried;
* if **any** token took the push, the send succeeded: it is not retried, even
  if another token hit a transient error, because retrying would show the
  notification twice on the device that got it (the push is a nudge; the app
  rehydrates from ``/chat/{id}/info``);
* if no token took it and at least one failure was transient
  (``QUOTA_EXCEEDED``, ``UNAVAILABLE``, ``INTERNAL``, deadline, transport),
  :class:`~extension_fsm.errors.DeliveryError` ``retryable=True``: the outbox
  keeps the row and retries with backoff;
* otherwise (no token at all, only dead tokens, or a permanent error such as
  a third-party auth failure) a final ``DeliveryError(retryable=False)``.

Every send is bounded by ``timeout`` (8 s by default, under the outbox's
per-call timeout): the SDK's HTTP timeout is lowered to it (the SDK's own
default is 120 s) and the whole send, device-token look-ups included, gives up
after it with a retryable ``DeliveryError``.  The SDK blocks a worker thread
that cannot be cancelled; such a thread ends at the HTTP timeout.

``firebase_admin`` is an optional dependency (``extension-fsm[fcm]``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import warnings
from collections.abc import Mapping
from typing import Any

from firebase_admin import App, exceptions, messaging  # type: ignore[import-untyped]

from ..errors import DeliveryError
from ..model import JSONValue, Participant, PushMessage
from ..ports import DeviceTokens

__all__ = ["FcmPushSender", "fcm_data", "is_dead_token_error", "is_transient_error"]

_log = logging.getLogger("extension_fsm.fcm")

_TRANSIENT: tuple[type[exceptions.FirebaseError], ...] = (
    messaging.QuotaExceededError,
    exceptions.ResourceExhaustedError,
    exceptions.UnavailableError,
    exceptions.InternalError,
    exceptions.DeadlineExceededError,
    exceptions.UnknownError,  # transport failures surface as UNKNOWN
)


def fcm_data(data: Mapping[str, JSONValue]) -> dict[str, str]:
    """The seed's data payload with every value a string, as FCM requires.

    Strings stay as they are; booleans, numbers, lists and objects become their
    JSON text (``true``, ``30``, ``12.5``) as the Node SDK's ``String(v)``
    gives for scalars; ``None`` becomes ``""``.
    """
    out: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, str):
            out[key] = value
        elif value is None:
            out[key] = ""
        else:
            out[key] = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return out


def is_dead_token_error(error: BaseException) -> bool:
    """Whether FCM says this token will never work again (remove it)."""
    if isinstance(error, messaging.UnregisteredError | messaging.SenderIdMismatchError):
        return True
    if isinstance(error, exceptions.InvalidArgumentError):
        return _about_token(error)
    return False


def is_transient_error(error: BaseException) -> bool:
    """Whether a later retry may succeed (quota, unavailable, internal, transport)."""
    return isinstance(error, _TRANSIENT)


def _about_token(error: exceptions.InvalidArgumentError) -> bool:
    # FCM v1 answers a malformed token with 400 INVALID_ARGUMENT; the same
    # status also means a malformed message, so look at what it blames.
    if "registration token" in str(error).lower():
        return True
    response = error.http_response
    if response is None:
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    details = body.get("error", {}).get("details", []) if isinstance(body, dict) else []
    for detail in details if isinstance(details, list) else []:
        for violation in detail.get("fieldViolations", []) if isinstance(detail, dict) else []:
            if isinstance(violation, dict) and violation.get("field") == "message.token":
                return True
    return False


class FcmPushSender:
    """:class:`~extension_fsm.ports.PushSender` over ``firebase_admin.messaging``.

    ``app`` is an initialised ``firebase_admin.App`` (its credential and
    project).  ``endpoint`` replaces ``https://fcm.googleapis.com`` for a local
    FCM v1 fake or emulator; the Admin SDK has no public setting for it, so it
    is set on the app's messaging service (checked at construction).
    """

    def __init__(
        self,
        app: App,
        tokens: DeviceTokens,
        *,
        endpoint: str | None = None,
        android_ttl_seconds: int | None = None,
        timeout: float = 8.0,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self._app = app
        self._tokens = tokens
        self._android_ttl = android_ttl_seconds
        self._timeout = timeout
        if endpoint is not None:
            _point_at(app, endpoint)
        _bound_http_timeout(app, timeout)

    async def send(self, participant: Participant, user_id: str, message: PushMessage) -> None:
        """Push ``message`` to every device of the user; see the module docstring."""
        try:
            async with asyncio.timeout(self._timeout):
                await self._send(participant, user_id, message)
        except TimeoutError:
            raise DeliveryError(
                f"FCM did not answer within {self._timeout} s", retryable=True
            ) from None

    async def _send(self, participant: Participant, user_id: str, message: PushMessage) -> None:
        tokens = [t for t in await self._tokens.tokens(participant, user_id) if t]
        if not tokens:
            raise DeliveryError(
                f"no device token for {participant.value} {user_id}", retryable=False
            )
        batch = [self._message(token, message) for token in tokens]
        try:
            response = await asyncio.to_thread(messaging.send_each, batch, False, self._app)
        except exceptions.FirebaseError as err:
            raise DeliveryError(
                f"FCM: {err.code}: {err}", retryable=is_transient_error(err)
            ) from err
        except ValueError as err:  # the SDK refused the message itself: retrying cannot help
            raise DeliveryError(f"FCM refused the message: {err}", retryable=False) from err

        transient: list[str] = []
        permanent: list[str] = []
        for token, result in zip(tokens, response.responses, strict=True):
            if result.success:
                continue
            error = result.exception
            if is_dead_token_error(error):
                _log.info("FCM: dropping dead token for %s %s: %s", participant, user_id, error)
                await self._tokens.remove(token)
                permanent.append(f"dead token ({error.code})")
            elif is_transient_error(error):
                transient.append(str(error.code))
            else:
                permanent.append(f"{getattr(error, 'code', type(error).__name__)}: {error}")
        if response.success_count > 0:
            if transient or permanent:
                _log.warning(
                    "FCM: %d of %d devices of %s %s failed: %s",
                    len(transient) + len(permanent),
                    len(tokens),
                    participant,
                    user_id,
                    transient + permanent,
                )
            return
        if transient:
            raise DeliveryError(f"FCM unavailable for every device: {transient}", retryable=True)
        raise DeliveryError(f"FCM refused every device: {permanent}", retryable=False)

    def _message(self, token: str, message: PushMessage) -> messaging.Message:
        with warnings.catch_warnings():
            # firebase_admin 7.7 deprecates ``token`` for ``fid`` (installation
            # ids); the apps register FCM registration tokens, which FCM v1
            # still addresses as ``message.token``.
            warnings.simplefilter("ignore", DeprecationWarning)
            return self._build(token, message)

    def _build(self, token: str, message: PushMessage) -> messaging.Message:
        return messaging.Message(
            token=token,
            notification=messaging.Notification(title=message.title, body=message.body),
            data=fcm_data(message.data),
            android=messaging.AndroidConfig(priority="high", ttl=self._android_ttl),
            apns=messaging.APNSConfig(
                headers={"apns-priority": "10", "apns-push-type": "alert"},
                payload=messaging.APNSPayload(
                    aps=messaging.Aps(
                        alert=messaging.ApsAlert(title=message.title, body=message.body),
                        sound="default",
                    )
                ),
            ),
        )


def _bound_http_timeout(app: App, timeout: float) -> None:
    """Lower the SDK's HTTP timeout for this app's messaging to ``timeout``."""
    client: Any = getattr(messaging._get_messaging_service(app), "_client", None)
    if client is None or not hasattr(client, "_timeout"):  # pragma: no cover - an SDK change
        raise RuntimeError("this firebase_admin version's HTTP timeout cannot be bounded")
    current = client._timeout
    if current is None or current > timeout:
        client._timeout = timeout


def _point_at(app: App, endpoint: str) -> None:
    service: Any = messaging._get_messaging_service(app)
    if not hasattr(service, "_fcm_url"):  # pragma: no cover - guards an SDK change
        raise RuntimeError("this firebase_admin version cannot be pointed at another endpoint")
    service._fcm_url = f"{endpoint.rstrip('/')}/v1/projects/{app.project_id}/messages:send"

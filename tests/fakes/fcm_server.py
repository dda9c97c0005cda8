"""A local FCM v1 server on 127.0.0.1: ``POST /v1/projects/{p}/messages:send``
and an OAuth2 ``/token`` endpoint for a service-account credential.

It records every request as it arrived (path, headers, JSON) and answers each
device token from a per-token script of outcomes (default: success), with the
error bodies the real service sends (``google.rpc.Status`` + ``FcmError``).
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "ACCESS_TOKEN",
    "INVALID_TOKEN",
    "QUOTA_EXCEEDED",
    "UNAVAILABLE",
    "UNREGISTERED",
    "FakeFcm",
    "FcmOutcome",
    "Recorded",
    "firebase_app",
    "service_account_info",
]

ACCESS_TOKEN = "ya29.local-fake-access-token"

# HTTP status, google.rpc status, FCM errorCode, extra headers
FcmOutcome = tuple[int, str, str, dict[str, str]]

UNREGISTERED: FcmOutcome = (404, "NOT_FOUND", "UNREGISTERED", {})
QUOTA_EXCEEDED: FcmOutcome = (429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", {})
# The real service sends Retry-After on 503; the SDK's transport honours it.
UNAVAILABLE: FcmOutcome = (503, "UNAVAILABLE", "UNAVAILABLE", {"Retry-After": "1"})
INVALID_TOKEN: FcmOutcome = (400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", {})


@dataclass(frozen=True)
class Recorded:
    """One request the server received."""

    path: str
    headers: dict[str, str]  # names lower-cased
    body: dict[str, Any]


@dataclass
class FakeFcm:
    """The server; ``start()`` binds a free loopback port."""

    project_id: str = "extension-fsm-test"
    requests: list[Recorded] = field(default_factory=list)
    token_requests: int = 0
    script: dict[str, deque[FcmOutcome]] = field(default_factory=lambda: defaultdict(deque))
    #: sends to these tokens get no answer until ``release`` is set
    hanging: set[str] = field(default_factory=set)
    release: threading.Event = field(default_factory=threading.Event)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def fail(self, token: str, *outcomes: FcmOutcome) -> None:
        """Answer the next sends to ``token`` with these errors, in order."""
        with self._lock:
            self.script[token].extend(outcomes)

    def sends(self) -> list[Recorded]:
        """The ``messages:send`` requests received so far."""
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/messages:send")]

    def start(self) -> FakeFcm:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path == "/token":
                    with fake._lock:
                        fake.token_requests += 1
                    self._answer(
                        200,
                        {"access_token": ACCESS_TOKEN, "expires_in": 3600, "token_type": "Bearer"},
                    )
                    return
                expected = f"/v1/projects/{fake.project_id}/messages:send"
                if self.path != expected:
                    self._answer(404, {"error": {"code": 404, "message": "no such path"}})
                    return
                body = json.loads(raw)
                token = body.get("message", {}).get("token", "")
                with fake._lock:
                    fake.requests.append(
                        Recorded(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    queue = fake.script.get(token)
                    outcome = queue.popleft() if queue else None
                    n = len(fake.requests)
                    hang = token in fake.hanging
                if hang:
                    fake.release.wait(timeout=60)  # a provider that does not answer
                if outcome is None:
                    self._answer(200, {"name": f"projects/{fake.project_id}/messages/{n}"})
                    return
                status, rpc_status, fcm_code, headers = outcome
                message = (
                    "The registration token is not a valid FCM registration token"
                    if fcm_code == "INVALID_ARGUMENT"
                    else f"fake {fcm_code}"
                )
                error = {
                    "code": status,
                    "message": message,
                    "status": rpc_status,
                    "details": [
                        {
                            "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                            "errorCode": fcm_code,
                        }
                    ],
                }
                self._answer(status, {"error": error}, headers)

            def _answer(
                self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def service_account_info(fake: FakeFcm) -> dict[str, str]:
    """A service-account JSON with a fresh local RSA key whose token_uri is ``fake``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {
        "type": "service_account",
        "project_id": fake.project_id,
        "private_key_id": "local-test-key",
        "private_key": pem,
        "client_email": f"push@{fake.project_id}.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": f"{fake.url}/token",
    }


def firebase_app(fake: FakeFcm, name: str) -> Any:
    """A ``firebase_admin.App`` whose credential gets its token from ``fake``
    (delete it with ``firebase_admin.delete_app``)."""
    import firebase_admin
    from firebase_admin import credentials

    cred = credentials.Certificate(service_account_info(fake))
    return firebase_admin.initialize_app(
        cred, {"projectId": fake.project_id, "httpTimeout": 10}, name=name
    )

"""The worker's HTTP port (``extension-fsm worker --metrics-port PORT``).

Three paths, every other one is 404:

- ``GET /metrics``: the library's instruments as Prometheus text
  (``prometheus_client``'s own WSGI app);
- ``GET /healthz``: alive: 200 when the worker's event loop runs a callback
  within ``timeout`` seconds, else 503 (a wedged process, for a liveness probe
  to restart);
- ``GET /readyz``: ready: 200 when the database answers and holds every table
  of the store (migrated), else 503 with the reason in one line.  Each probe
  opens its own short-lived connection, bounded by ``timeout``.

Served by the standard library's WSGI server on a daemon thread, one thread
per request, so a slow database check never holds a liveness answer.  Needs
the ``prometheus`` extra.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["HealthServer", "database_ready"]

#: seconds a probe may take before it answers 503
DEFAULT_TIMEOUT = 5.0


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds are not worth a line each."""


async def database_ready(
    url: str, *, table_prefix: str = "", layout: str = "default"
) -> str | None:
    """``None`` when ``url`` answers and is migrated, else why not (one line)."""
    from .adapters.sqlalchemy import SqlAlchemyStore
    from .operator_status import missing_tables

    try:
        async with await SqlAlchemyStore.open(
            url, table_prefix=table_prefix, layout=layout
        ) as store:
            missing = await missing_tables(store)
    except Exception as err:
        return f"database unreachable: {type(err).__name__}: {' '.join(str(err).split())[:200]}"
    if missing:
        return f"database not migrated (missing {', '.join(missing)})"
    return None


class HealthServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on ``port`` (0: any free port).

    ``ready`` returns ``None`` when ready, else the reason; it runs on the
    request's thread in its own event loop.  :meth:`watch` names the event
    loop ``/healthz`` checks (until then ``/healthz`` answers 503).
    """

    def __init__(
        self,
        port: int,
        ready: Callable[[], Any],
        *,
        host: str = "0.0.0.0",  # a probe port: reached from outside the pod
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        from prometheus_client import make_wsgi_app

        self._metrics: WSGIApplication = make_wsgi_app()
        self._ready = ready
        self._timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server = make_server(
            host, port, self._app, server_class=_Server, handler_class=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="extension-fsm-http", daemon=True
        )

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Serve on a daemon thread."""
        self._thread.start()

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """``/healthz`` answers for ``loop`` from now on."""
        self._loop = loop

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------------- WSGI

    def _app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._metrics(environ, start_response)
        if path == "/healthz":
            return _answer(start_response, self._alive())
        if path == "/readyz":
            return _answer(start_response, self._readiness())
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: /metrics, /healthz, /readyz\n"]

    def _alive(self) -> str | None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return "the worker's event loop is not running"
        answered = threading.Event()
        try:
            loop.call_soon_threadsafe(answered.set)
        except RuntimeError:  # closed meanwhile
            return "the worker's event loop is not running"
        if not answered.wait(self._timeout):
            return f"the worker's event loop did not answer within {self._timeout:g} s"
        return None

    def _readiness(self) -> str | None:
        async def bounded() -> str | None:
            try:
                async with asyncio.timeout(self._timeout):
                    why: str | None = await self._ready()
                    return why
            except TimeoutError:
                return f"database did not answer within {self._timeout:g} s"

        return asyncio.run(bounded())


def _answer(start_response: StartResponse, why_not: str | None) -> list[bytes]:
    status = "200 OK" if why_not is None else "503 Service Unavailable"
    start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
    return [(why_not or "ok").encode() + b"\n"]

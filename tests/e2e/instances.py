"""Instances of the example as real uvicorn processes (so a test can SIGKILL
one), sharing a PostgreSQL database and a Redis, each reaching Redis through
its own :class:`~tests.fakes.tcp_proxy.TcpProxy` (so a test can cut one off).

A regular module, imported once as ``tests.e2e.instances``.  Every wait is
bounded; :meth:`Instance.stop` and :meth:`Instance.kill` always reap the
process, and :meth:`Instance.close` also closes its log file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect

from extension_fsm import Participant
from extension_fsm.adapters.sqlalchemy import SqlAlchemyStore
from tests.e2e.parties import SECRET, Party, new_party, party_rows
from tests.fakes.tcp_proxy import TcpProxy

__all__ = ["Instance", "next_frame", "open_socket", "seed_party_in", "start_instance"]

ROOT = Path(__file__).resolve().parents[2]
#: uvicorn's line naming the port it bound
_RUNNING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")
#: a guard against a hang, never a measured speed
START_BOUND = 90.0
STOP_BOUND = 30.0


@dataclass
class Instance:
    """One uvicorn process of the example."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]
    redis_proxy: TcpProxy
    prefix: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def output(self) -> str:
        """What the process logged so far (for assertion messages)."""
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")[-8000:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no cleanup, as a crashed host."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=STOP_BOUND)

    def stop(self) -> None:
        """SIGTERM (uvicorn runs the app's shutdown), SIGKILL if it outlives the bound."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_BOUND)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait(timeout=STOP_BOUND)

    def close(self) -> None:
        """Stop the process (if still running), then close its log and its proxy."""
        try:
            self.stop()
        finally:
            self.log.close()
            self.redis_proxy.stop()


def start_instance(
    name: str,
    *,
    database_url: str,
    redis_url: str,
    prefix: str,
    fcm_credentials: Path,
    fcm_endpoint: str,
    log_dir: Path,
    **settings: str,
) -> Instance:
    """Start the example as ``python -m uvicorn`` with these settings; return
    once it answers HTTP.  Redis is reached through a fresh proxy."""
    target = urlsplit(redis_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 6379).start()
    db_index = target.path.strip("/") or "0"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "EXTENSION_FSM_JWT_SECRET": SECRET,
        "EXTENSION_FSM_DATABASE_URL": database_url,
        "EXTENSION_FSM_REDIS_URL": f"redis://127.0.0.1:{proxy.port}/{db_index}",
        "EXTENSION_FSM_REDIS_PREFIX": prefix,
        "EXTENSION_FSM_FCM_CREDENTIALS": str(fcm_credentials),
        "EXTENSION_FSM_FCM_ENDPOINT": fcm_endpoint,
        **{f"EXTENSION_FSM_{key.upper()}": value for key, value in settings.items()},
    }
    log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "examples.fastapi_app.app:app",
            "--host",
            "127.0.0.1",
            # Port 0: the system picks a free port at bind time, and the
            # process says which.  (A port picked free beforehand can be taken
            # by another process before uvicorn binds it, and the test would
            # then talk to a stranger.)
            "--port",
            "0",
            "--ws",
            "websockets-sansio",
            "--log-level",
            "info",
            "--no-access-log",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
    )
    instance = Instance(name, 0, proc, log_path, log, proxy, prefix)
    try:
        _wait_until_serving(instance)
    except BaseException:
        instance.close()
        raise
    return instance


def _wait_until_serving(instance: Instance) -> None:
    deadline = time.monotonic() + START_BOUND
    while True:
        if not instance.alive():
            raise RuntimeError(f"{instance.name} exited at start:\n{instance.output()}")
        if not instance.port:
            instance.log.flush()
            bound = _RUNNING.search(instance.log_path.read_text(errors="replace"))
            if bound is not None:
                instance.port = int(bound.group(1))
        if instance.port:
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(f"{instance.url}/openapi.json", timeout=5)
                if r.status_code == 200:
                    return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{instance.name} did not start:\n{instance.output()}")
        time.sleep(0.1)


async def seed_party_in(store: SqlAlchemyStore, *, amount: int = 25000) -> Party:
    """A fresh active session with a confirmed extension payment, written
    straight to the shared database (as the host's own services would)."""
    party = new_party()
    session, payment = party_rows(party, amount=amount)
    await store.seed_session(session)
    await store.seed_payment(payment)
    return party


async def open_socket(instance: Instance, party: Party, role: Participant) -> ClientConnection:
    """A chat socket of ``role`` on ``instance`` (registration is checked by the caller)."""
    token = party.customer if role is Participant.CUSTOMER else party.mitra
    return await connect(
        f"{instance.ws_url}/ws/chat/{party.session_id}?token={token}", open_timeout=30
    )


async def next_frame(ws: ClientConnection, within: float = 30.0) -> dict[str, Any]:
    """The next JSON frame, or fail after ``within`` seconds (a hang guard)."""
    raw = await asyncio.wait_for(ws.recv(decode=True), within)
    frame: dict[str, Any] = json.loads(raw)
    return frame

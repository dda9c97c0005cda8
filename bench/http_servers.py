"""The two HTTP servers of the HTTP case, each under uvicorn with the same settings:
one process on loopback, ``--log-level warning``, an app factory; started and
stopped without blocking the event loop (the statement counter lives in it)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import httpx

from .load_case import ROOT, SECRET, UVICORN_ARGS, _free_port

TIMEOUT_S = 60  # the extensions' answer window: every accept beats it under load
RUN_LIMIT_S = 180.0  # a run stops handing out sessions after this
RAW_POOL = 10
APPS = {
    "ours": "examples.fastapi_app.app:create_app",
    "raw": "bench.raw_app:create_app",
}


def _env(app: str, url: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    if app.startswith("ours"):
        env.update(
            EXTENSION_FSM_DATABASE_URL=url,
            EXTENSION_FSM_JWT_SECRET=SECRET,
            EXTENSION_FSM_TIMEOUT_SECONDS=str(TIMEOUT_S),
            EXTENSION_FSM_TIMEOUT_ACTION="auto_reject",
        )
    else:
        env.update(
            RAW_APP_DATABASE_URL=url,
            RAW_APP_JWT_SECRET=SECRET,
            RAW_APP_POOL_SIZE=str(RAW_POOL),
            RAW_APP_TIMEOUT_SECONDS=str(TIMEOUT_S),
        )
    return env


def _spawn(app: str, url: str) -> tuple[subprocess.Popen[bytes], int]:
    """uvicorn with the same settings for both apps: one process, loopback, warnings only."""
    port = _free_port()
    args = ["--factory", "--host", "127.0.0.1", "--port", str(port), *UVICORN_ARGS]
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", APPS[app], *args], cwd=ROOT, env=_env(app, url)
    )
    return proc, port


async def start_server(app: str, url: str) -> tuple[subprocess.Popen[bytes], str]:
    """:func:`_spawn`, then wait (without blocking the loop) until it answers."""
    proc, port = _spawn(app, url)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{app} server exited with {proc.returncode}")
            try:
                if (await http.get(f"{base}/openapi.json")).status_code == 200:
                    return proc, base
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    await stop_server(proc)
    raise RuntimeError(f"{app} server did not start in 60 s")


async def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """Terminate, wait without blocking the loop (the counting proxy lives in it), kill at 30 s."""
    proc.terminate()
    try:
        await asyncio.to_thread(proc.wait, 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        await asyncio.to_thread(proc.wait, 10)

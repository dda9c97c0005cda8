"""The example app, live, with a local FCM server; the ``party`` fixture seeds a
fresh session (helpers in ``tests.e2e.parties``, never imported from here)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from examples.fastapi_app.app import create_app
from examples.fastapi_app.settings import Settings
from tests.e2e.live import LiveServer
from tests.e2e.parties import SECRET, Party, seed_party
from tests.fakes.fcm_server import FakeFcm, service_account_info


@pytest.fixture(scope="module")
def fcm() -> Iterator[FakeFcm]:
    server = FakeFcm().start()
    yield server
    server.release.set()  # a push a test held goes, so the server can stop
    server.stop()


@pytest.fixture(scope="module")
def creds(fcm: FakeFcm, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A service-account file that points firebase_admin at ``fcm``."""
    path = Path(tmp_path_factory.mktemp("fcm")) / "service-account.json"
    path.write_text(json.dumps(service_account_info(fcm)))
    return path


@pytest.fixture(scope="module")
def live(
    fcm: FakeFcm, creds: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    db = Path(tmp_path_factory.mktemp("db")) / "e2e.db"
    settings = Settings(
        jwt_secret=SECRET,
        database_url=f"sqlite:///{db}",
        fcm_credentials_file=str(creds),
        fcm_endpoint=fcm.url,
        timeout_seconds=30,
        sweep_interval=0.2,
    )
    server = LiveServer(create_app(settings)).start()
    yield server
    server.stop()


@pytest.fixture
def party(live: LiveServer) -> Party:
    return seed_party(live)

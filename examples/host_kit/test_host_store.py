"""Our store, proven with extension_fsm's test kit: the contract, then the races."""

import os
import uuid
from pathlib import Path

from hypothesis import settings

from examples.host_kit.host_store import open_host_store
from extension_fsm.ports import InspectableStore
from extension_fsm.testing import ExtensionRaces, StoreContract, YieldingStore

POSTGRES = os.environ.get("HOST_KIT_DATABASE_URL")  # unset: SQLite


class TestHostStore(StoreContract):
    async def make_store(self, tmp_path: Path) -> InspectableStore:
        url = POSTGRES or f"sqlite:///{tmp_path / 'host.db'}"
        return await open_host_store(url, namespace=f"h{uuid.uuid4().hex[:8]}_")


class HostRaces(ExtensionRaces):
    async def make_store(self) -> InspectableStore:
        url = POSTGRES or "sqlite://"
        return YieldingStore(await open_host_store(url, namespace=f"h{uuid.uuid4().hex[:8]}_"))


TestHostRaces = HostRaces.TestCase
TestHostRaces.settings = settings(max_examples=5, stateful_step_count=20, deadline=None)

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge.store import Store
from provisioning.keys import NodeBundle
from sync.clock import ManualClock
from tests.conftest import ADMIN_PASSWORD


def slots(bundle: NodeBundle) -> list[dict[str, object]]:
    return [s.config() for s in bundle.keyslots]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def store(bundle: NodeBundle, tmp_path: Path, clock: ManualClock) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path / "node.db", bundle.node_id, bundle.hq_seal_public, clock)
    await s.import_keyslots(slots(bundle))
    assert await s.unlock("admin", ADMIN_PASSWORD) is not None
    yield s
    await s.close()

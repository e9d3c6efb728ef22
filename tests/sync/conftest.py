"""Area fixtures for sync: keys, a node outbox DB, an HQ store, all on real SQLite files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiosqlite
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hq.store import HQStore
from sync import outbox
from sync.clock import ManualClock
from sync.db import open_db
from sync.ingest import Ingest


@dataclass
class Keys:
    node: Ed25519PrivateKey
    hq: Ed25519PrivateKey


@pytest.fixture
def keys() -> Keys:
    return Keys(Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate())


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def node_db(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    db = await open_db(tmp_path / "node.db")
    await outbox.create_schema(db)
    yield db
    await db.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def hq_target(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where HQ's database lives: a SQLite file, or a fresh PostgreSQL database (skipped with the reason if none)."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return tmp_path / "hq.db"


@pytest.fixture
async def hq_store(hq_target: Path | str, clock: ManualClock) -> AsyncIterator[HQStore]:
    store = await HQStore.open(hq_target, clock)
    yield store
    await store.close()


@pytest.fixture
def ingest(hq_store: HQStore, keys: Keys, clock: ManualClock) -> Ingest:
    pub = keys.node.public_key()
    return Ingest(hq_store, lambda n: pub if n == "van-01" else None, keys.hq, clock)

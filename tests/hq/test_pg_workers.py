"""Two HQ ingest workers on one shared subscription ($share/hq/...), both on one PostgreSQL database."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.sync.harness import hq_items, hq_workers, node_outbox, node_uplink, pending, record, submit, wait_for

pytestmark = pytest.mark.functional


async def test_two_workers_on_postgres_hold_every_record_once(mosquitto, pg_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    nk, hk = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    node_db = tmp_path / "node.db"
    async with node_outbox(node_db) as db, hq_workers(mosquitto.url, pg_url, nk, hk, n=2) as workers:
        async def connected() -> bool:
            return all(w.connected for w, _ in workers)

        await wait_for(connected, what="HQ workers")
        # small batches and a short ack timeout: both workers get work, and resends race with first deliveries
        async with node_uplink(mosquitto.url, node_db, nk, hk, ack_timeout=1.0, max_batch_items=5) as up:
            await submit(db, 1, 200)
            up.kick()

            async def drained() -> bool:
                return await pending(node_db) == 0

            await wait_for(drained, 90, "outbox drained")
        handled = [w.ingest.stored for w, _ in workers]
        assert all(s.backend == "postgresql" for _, s in workers)
    items = await hq_items(pg_url)
    assert [s for s, _ in items] == list(range(1, 201))  # nothing lost, nothing twice (the key would refuse it anyway)
    assert [p for _, p in items] == [record(i) for i in range(1, 201)]
    assert sum(handled) == 200 and all(h > 0 for h in handled), handled
    stats = await _stats(pg_url)
    assert stats["records"] == 200  # the projection too: each application once


async def _stats(url: str) -> dict[str, int]:
    from hq.store import HQStore
    from sync.clock import ManualClock

    store = await HQStore.open(url, ManualClock())
    try:
        return await store.stats()
    finally:
        await store.close()

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


def test_hq_process_on_postgres_receives_a_vans_records(tmp_path: Path, bundle, mosquitto, procs, pg_url: str) -> None:  # type: ignore[no-untyped-def]
    """`mobile-office hq --db postgresql://...` and `hq-user --db`: the real processes, the real van."""
    import subprocess

    from tests.conftest import ADMIN_PASSWORD, free_port, http_ok, mobile_office_cmd, spawn, wait_until
    from tests.helpers import ApiClient, hq_token

    hq_dir = bundle.directory.parent / "hq"
    r = subprocess.run(mobile_office_cmd("hq-user", "olena.k", "--role", "viewer", "--hq-data-dir", str(hq_dir), "--db", pg_url,
                                         "--password", "довгий-пароль-1"), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    hq_port, node_port = free_port(), free_port()
    procs.append(spawn(mobile_office_cmd("hq", "--hq-data-dir", str(hq_dir), "--db", pg_url, "--hq-broker", mosquitto.url,
                                         "--hq-host", "127.0.0.1", "--hq-port", str(hq_port)), tmp_path / "hq.log"))
    wait_until(lambda: http_ok(f"http://127.0.0.1:{hq_port}/healthz"), 30, what="HQ to serve")
    procs.append(spawn(mobile_office_cmd("node", "--bundle", str(bundle.directory), "--data-dir", str(tmp_path / "node"),
                                         "--broker", mosquitto.url, "--gpsd", f"127.0.0.1:{free_port()}", "--http-host", "127.0.0.1",
                                         "--http-port", str(node_port)), tmp_path / "node.log"))
    wait_until(lambda: http_ok(f"http://127.0.0.1:{node_port}/healthz"), 30, what="node")
    van = ApiClient(f"http://127.0.0.1:{node_port}")
    van.login("admin", ADMIN_PASSWORD)
    status, doc = van.request("POST", "/api/v1/applications",
                              {"surname": "Шевченко", "given_name": "Тарас", "rnokpp": "1759013776", "service_code": "RES-01"})
    assert status == 201, doc
    hq = ApiClient(f"http://127.0.0.1:{hq_port}", hq_token(hq_dir, db=pg_url))
    wait_until(lambda: hq.get("/api/v1/stats")["records"] == 1, 60, what="the record at HQ")
    assert [n["node_id"] for n in hq.get("/api/v1/fleet")] == ["van-01"]
    # the user went to PostgreSQL, not to a SQLite file in the data directory
    assert not (hq_dir / "hq.db").exists()

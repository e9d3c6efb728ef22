"""Against a real Mosquitto: two HQ workers on a shared subscription, downlink commands, catalogue."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync import downlink
from sync.envelope import decode, topic_catalog, topic_down

from .harness import NODE, hq_items, node_outbox, hq_workers, node_uplink, pending, record, submit, wait_for

pytestmark = pytest.mark.functional


async def test_two_hq_workers_share_the_load_without_duplicates(mosquitto, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    nk, hk = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    node_db, hq_db = tmp_path / "node.db", tmp_path / "hq.db"
    async with node_outbox(node_db) as db, hq_workers(mosquitto.url, hq_db, nk, hk, n=2) as workers:
        await wait_for(lambda: _true(all(w.connected for w, _ in workers)), what="HQ workers")
        # small batches so both workers get work
        async with node_uplink(mosquitto.url, node_db, nk, hk, max_batch_items=7) as up:
            await submit(db, 1, 300)
            up.kick()

            async def drained() -> bool:
                return await pending(node_db) == 0

            await wait_for(drained, 90, "outbox drained")
        handled = [w.ingest.stored for w, _ in workers]
    items = await hq_items(hq_db)
    assert [s for s, _ in items] == list(range(1, 301))
    assert [p for _, p in items] == [record(i) for i in range(1, 301)]
    assert sum(handled) == 300 and all(h > 0 for h in handled), handled


async def _true(v: bool) -> bool:
    return v


async def test_commands_and_catalogue_reach_the_node_once(mosquitto, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    nk, hk = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    node_db, hq_db = tmp_path / "node.db", tmp_path / "hq.db"
    seen: list[str] = []
    catalogs: list[int] = []

    async def on_sync_now(doc: dict[str, object]) -> None:
        seen.append(str(doc["id"]))

    async def on_catalog(doc: dict[str, object]) -> None:
        catalogs.append(int(doc["version"]))  # type: ignore[call-overload]

    async with hq_workers(mosquitto.url, hq_db, nk, hk, n=1) as workers:
        worker, _ = workers[0]
        await wait_for(lambda: _true(worker.connected), what="HQ worker")
        # the catalogue is retained: published before the node exists, it still arrives
        cat = downlink.build(hk, "all", "catalog", 3, [{"version": 3, "services": ["S1"]}], 1)
        await worker.publish_down(topic_catalog(), cat, retain=True)
        async with node_uplink(mosquitto.url, node_db, nk, hk) as up:
            up.handlers["sync_now"] = on_sync_now
            up.handlers["catalog"] = on_catalog
            await wait_for(lambda: _true(up.status.mqtt_up), what="node up")
            await wait_for(lambda: _true(catalogs == [3]), what="catalogue applied")
            cmd = downlink.build(hk, NODE, "cmd", 1, [downlink.command("c-1", "sync_now", time.time() + 60)], 2)
            for _ in range(3):  # HQ may repeat a command; the node applies it once
                await worker.publish_down(topic_down(NODE, "cmd"), cmd)
            forged = downlink.build(nk, NODE, "cmd", 2, [downlink.command("c-2", "shred", time.time() + 60)], 3)
            await worker.publish_down(topic_down(NODE, "cmd"), forged)

            async def acked_up() -> bool:
                items = await hq_items(hq_db, "evt")
                return len(items) >= 1 and up.status.rejected_downlinks >= 1

            await wait_for(acked_up, 60, "command ack at HQ")
            await asyncio.sleep(0.5)
    assert seen == ["c-1"]
    evts = [json.loads(p) for _, p in await hq_items(hq_db, "evt")]
    assert [(e["id"], e["result"]) for e in evts] == [("c-1", "applied")]


async def test_a_large_backlog_goes_in_larger_batches(mosquitto, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Past four full batches waiting, the uplink sends batches four times the bytes (fewer signatures, COMMITs, acks)."""
    nk, hk = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    node_db, hq_db = tmp_path / "node.db", tmp_path / "hq.db"
    sizes: list[int] = []  # bytes of items per envelope HQ received on the rec stream
    async with node_outbox(node_db) as db, hq_workers(mosquitto.url, hq_db, nk, hk, n=1) as workers:
        worker, _ = workers[0]
        handle_many = worker.ingest.handle_many

        async def watching(messages, checked=None):  # type: ignore[no-untyped-def]
            for payload, *_ in messages:
                env = decode(payload, lambda n: nk.public_key())
                if env.stream == "rec":
                    sizes.append(sum(len(i) for i in env.items))
            return await handle_many(messages, checked)

        worker.ingest.handle_many = watching  # type: ignore[method-assign]
        await wait_for(lambda: _true(worker.connected), what="HQ worker")
        await submit(db, 1, 300)  # ~90 B each: ~27 KB waiting, over 4 x 2 KiB
        async with node_uplink(mosquitto.url, node_db, nk, hk, max_batch_bytes=2048) as up:
            up.kick()

            async def drained() -> bool:
                return await pending(node_db) == 0

            await wait_for(drained, 90, "outbox drained")
    assert [s for s, _ in await hq_items(hq_db)] == list(range(1, 301))
    assert max(sizes) > 2048, sizes  # a backlog batch is larger than the normal limit
    assert max(sizes) <= 4 * 2048, sizes

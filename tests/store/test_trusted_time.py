"""Trusted time in the node's records, in-process on real SQLite files: stamps, numbers, what waits for trusted time."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from edge import audit
from edge.app import create_app
from edge.service_desk import ServiceDesk
from edge.store import Store
from kit.timesource import TimeSource
from provisioning.keys import NodeBundle
from sync import outbox
from sync.auditchain import parse_wire
from sync.clock import ManualClock
from sync.db import open_db
from sync.downlink import Downlink, command
from sync.envelope import Envelope
from tests.conftest import ADMIN_PASSWORD
from tests.store.conftest import slots
from tests.unit.test_node_api import node_config

WEEK = 7 * 86400.0
BEHIND = 3 * 86400.0


@pytest.fixture
def clock() -> ManualClock:
    c = ManualClock()
    c.synced = False  # a cold boot: nobody vouches for this clock
    return c


async def outbox_items(store: Store, stream: str) -> list[dict[str, Any]]:
    async with store.db.execute("SELECT payload FROM outbox WHERE stream = ? ORDER BY seq", (stream,)) as cur:
        return [json.loads(bytes(r[0])) async for r in cur]


async def test_untrusted_records_are_marked_numbered_without_a_date_and_audited(store: Store, clock: ManualClock) -> None:
    aid = await store.create_applicant({"surname": "Шевченко", "given_name": "Тарас", "rnokpp": "1759013776"}, "admin")
    first = await store.create_application("Шевченко", "Тарас", "1759013776", "RES-01", "admin", aid)
    second = await store.create_application("Шевченко", "Тарас", "1759013776", "PEN-01", "admin", aid)
    assert first.number == "VAN-01-U-00001" and second.number == "VAN-01-U-00002"  # no date, still unique
    rec = await store.read_application(first.id, "admin")
    assert rec["created_trusted"] == "0"  # the receipt prints no date
    recs = await outbox_items(store, "rec")
    assert all(r["clock"]["trusted"] is False and r["clock"]["boot"] == store.time.boot and r["clock"]["mono"] == 0.0 for r in recs)
    entries = [parse_wire(json.dumps(e).encode()) for e in await outbox_items(store, "audit")]
    assert entries and all(e.clock is not None and e.clock["trusted"] is False for e in entries)
    assert await audit.verify_local(store.db) == []  # the clock is inside the hash, and the chain holds
    clock.synced = True
    third = await store.create_application("Шевченко", "Тарас", "1759013776", "RES-01", "admin", aid)
    assert third.number == "VAN-01-20260528-0001"  # the ManualClock's day, now trusted


async def test_retention_waits_for_trusted_time_and_counts_from_the_corrected_time(store: Store, clock: ManualClock) -> None:
    saved = await store.create_application("Шевченко", "Тарас", "1759013776", "RES-01", "admin")
    await outbox.apply_ack(store.db, "rec", 10, clock.now())
    clock.advance(2 * WEEK)
    assert await store.shred_expired(WEEK) == 0  # no trusted time: nothing expires
    # chrony steps the clock three days forward and says it is synchronised; the record's own time was wrong
    clock._now += BEHIND
    clock.synced = True
    assert await store.shred_expired(WEEK) == 0  # its time is not yet corrected: it waits
    fix = store.time.take_fix()
    assert fix is not None and fix.source == "disciplined"
    assert await store.apply_time_fix(fix) == 1
    async with store.db.execute("SELECT created, time_trusted FROM applications WHERE id = ?", (saved.id,)) as cur:
        created, trusted = await cur.fetchone()  # type: ignore[misc]
    assert trusted == 1 and created == ManualClock().now() + BEHIND  # the true time it was made
    assert (await outbox_items(store, "evt"))[-1] == fix.wire()  # HQ is told
    assert await store.shred_expired(WEEK) == 1  # two weeks after its true time: now it goes


async def test_a_record_of_an_earlier_boot_is_never_shredded_early_nor_dated(bundle: NodeBundle, tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "node.db"
    old = await Store.open(path, bundle.node_id, bundle.hq_seal_public, TimeSource(clock, boot="a" * 32))
    await old.import_keyslots(slots(bundle))
    assert await old.unlock("admin", ADMIN_PASSWORD)
    saved = await old.create_application("Шевченко", "Тарас", "1759013776", "RES-01", "admin")
    await old.close()
    clock.advance(3600)
    clock.synced = True
    new = await Store.open(path, bundle.node_id, bundle.hq_seal_public, TimeSource(clock, boot="b" * 32))
    try:
        assert await new.unlock("admin", ADMIN_PASSWORD)
        fix = new.time.take_fix()
        assert fix is not None and await new.apply_time_fix(fix) == 1
        async with new.db.execute("SELECT created, time_trusted FROM applications WHERE id = ?", (saved.id,)) as cur:
            created, trusted = await cur.fetchone()  # type: ignore[misc]
        assert trusted == 2 and created == fix.time  # an upper bound: retention counts from later, never earlier
        assert (await new.read_application(saved.id, "admin"))["created_trusted"] == "0"  # and no date on its receipt
    finally:
        await new.close()


async def test_command_expiry_waits_for_trusted_time(tmp_path: Path, clock: ManualClock) -> None:
    db = await open_db(tmp_path / "node.db")
    try:
        await outbox.create_schema(db)
        down = Downlink(db, TimeSource(clock))
        await down.create_schema()
        ran: list[str] = []

        async def lock(doc: dict[str, Any]) -> None:
            ran.append(str(doc["id"]))

        down.register("lock", lock)
        # the clock is a week behind: a command expired a day ago looks valid, a fresh one looks far away
        stale = command("c-old", "lock", clock.now() + WEEK - 86400)
        fresh = command("c-new", "lock", clock.now() + WEEK + 3600)
        env = Envelope("van-01", "cmd", 1, tuple(json.dumps(d).encode() for d in (stale, fresh)), 1, downlink=True)
        assert [a.result for a in await down.apply(env)] == ["deferred", "deferred"]
        assert ran == [] and await down.apply_deferred() == 0
        clock._now += WEEK
        clock.synced = True
        assert await down.apply_deferred() == 2
        assert ran == ["c-new"]  # the stale one was judged expired in true time, never run
        async with db.execute("SELECT id, result FROM downlink_applied ORDER BY id") as cur:
            assert [tuple(r) async for r in cur] == [("c-new", "applied"), ("c-old", "expired")]
        assert await down.apply_deferred() == 0
    finally:
        await db.close()


async def test_queue_without_trusted_time_keeps_its_own_day_and_joins_the_true_one(store: Store, clock: ManualClock) -> None:
    desk = ServiceDesk(store)
    first = await desk.issue_ticket()
    clock.synced = True
    second = await desk.issue_ticket()
    assert (first.label, second.label) == ("А-001", "А-002")  # numbers go on: no two tickets share a label today
    assert [t.id for t in await desk.today()] == [first.id, second.id]
    async with store.db.execute("SELECT day FROM queue_tickets ORDER BY number") as cur:
        days = [r[0] async for r in cur]
    assert days[0].startswith("U") and days[1] == "20260528"


@pytest.fixture
async def client(bundle: NodeBundle, tmp_path: Path, clock: ManualClock) -> AsyncIterator[TestClient]:
    cfg = node_config(bundle, tmp_path / "node")
    cfg.clock = clock
    # the kernel's flag is the test clock's (clock.synced), never this machine's "assume"
    cfg.trust_kernel_clock, cfg.assume_clock_synchronised = True, False
    async with TestClient(TestServer(create_app(cfg))) as c:
        yield c


async def test_status_says_how_sure_and_the_receipt_shows_no_untrusted_date(client: TestClient, clock: ManualClock, tmp_path: Path) -> None:
    doc = await (await client.get("/api/v1/status")).json()
    assert doc["time"] == {"source": "unsynced", "trusted": False, "offset": None, "gps_rejected": None}
    r = await client.post("/api/v1/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status == 200
    r = await client.post("/api/v1/applications", json={"surname": "Шевченко", "given_name": "Тарас", "rnokpp": "1759013776",
                                                       "service_code": "RES-01"})
    saved = await r.json()
    assert r.status == 201 and saved["number"].startswith("VAN-01-U-")
    page = await (await client.get(f"/applications/{saved['id']}/receipt")).text()
    assert "буде уточнена" in page and "28.05.2026" not in page
    page = await (await client.get("/")).text()
    assert 'data-field="time"' in page and "не підтверджено" in page  # the status bar
    clock.synced = True
    doc = await (await client.get("/api/v1/status")).json()
    assert doc["time"]["source"] == "disciplined" and doc["time"]["trusted"] is True
    assert sqlite3.connect(tmp_path / "node" / "node.db").execute("SELECT COUNT(*) FROM applications").fetchone() == (1,)

"""The encrypted store: applicants, search, keyslots, lock across restart, shredding, audit."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from edge import audit
from edge.errors import CryptoError, StoreLocked
from edge.store import Store
from hq import audit as hq_audit
from hq.store import HQStore
from provisioning.keys import NodeBundle
from sync import outbox
from sync.clock import ManualClock
from sync.db import run_sync
from sync.envelope import Envelope
from tests.conftest import ADMIN_PASSWORD
from tests.store.conftest import slots

APPLICANT = {"surname": "Шевченко", "given_name": "Тарас", "birth_date": "1948-02-28", "rnokpp": "1759013776",
             "unzr": "19550212-01110", "document_type": "id_card", "document_number": "000123456", "phone": "+380671234567"}


async def test_applicant_found_by_every_index(store: Store) -> None:
    aid = await store.create_applicant(APPLICANT, "admin")
    other = await store.create_applicant({**APPLICANT, "rnokpp": "3184710691", "unzr": "", "document_number": "", "birth_date": ""}, "admin")
    for query in ({"rnokpp": "1759013776"}, {"unzr": "19550212-01110"}, {"document": ("id_card", "000123456")},
                  {"surname": "шевченко", "birth_date": "1948-02-28"}):
        found = await store.find_applicants("admin", **query)  # type: ignore[arg-type]
        assert [f["id"] for f in found] == [aid], query
        assert found[0]["surname"] == "Шевченко"
    assert [f["id"] for f in await store.find_applicants("admin", rnokpp="3184710691")] == [other]
    assert await store.find_applicants("admin", rnokpp="0000000000") == []


async def test_locked_store_refuses_personal_data_but_records_positions(store: Store) -> None:
    store.lock()
    with pytest.raises(StoreLocked):
        await store.create_applicant(APPLICANT, "admin")
    with pytest.raises(StoreLocked):
        await store.find_applicants("admin", rnokpp="1759013776")
    await store.record_position(1_780_000_000.0, 47.9, 33.4)
    states = await outbox.streams(store.db)
    assert states["pos"].pending == 1


async def test_lock_and_unlock_across_restart(bundle: NodeBundle, tmp_path: Path, clock: ManualClock) -> None:
    s = await Store.open(tmp_path / "n.db", bundle.node_id, bundle.hq_seal_public, clock)
    await s.import_keyslots(slots(bundle))
    await s.unlock("admin", ADMIN_PASSWORD)
    saved = await s.create_application("Шевченко", "Тарас", "1759013776", "RES-01", "admin")
    await s.close()
    s = await Store.open(tmp_path / "n.db", bundle.node_id, bundle.hq_seal_public, clock)
    assert not await s.import_keyslots(slots(bundle))  # already there: not replaced
    assert s.locked
    with pytest.raises(StoreLocked):
        await s.read_application(saved.id, "admin")
    assert await s.unlock("admin", "wrong") is None and s.locked
    assert await s.unlock("admin", ADMIN_PASSWORD) is not None
    assert (await s.read_application(saved.id, "admin"))["surname"] == "Шевченко"
    await s.close()


async def test_password_change_and_second_admin(store: Store) -> None:
    await store.add_admin("olena", "Олена-пароль-2", "case_admin", "admin")
    await store.change_password("admin", "Новий-пароль-3")
    assert await store.unlock("admin", ADMIN_PASSWORD) is None
    assert (await store.unlock("admin", "Новий-пароль-3")).role == "van_admin"  # type: ignore[union-attr]
    assert (await store.unlock("olena", "Олена-пароль-2")).role == "case_admin"  # type: ignore[union-attr]
    assert await store.remove_admin("olena", "admin")
    assert await store.unlock("olena", "Олена-пароль-2") is None
    with pytest.raises(ValueError):
        await store.remove_admin("admin", "admin")


async def test_shredding_waits_for_hq_ack_and_retention(store: Store, clock: ManualClock, tmp_path: Path) -> None:
    saved = await store.create_application("Шевченко", "Тарас", "1759013776", "RES-01", "admin")
    week = 7 * 86400
    clock.advance(week + 1)
    assert await store.shred_expired(week) == 0  # HQ has not acknowledged it yet
    await outbox.apply_ack(store.db, "rec", 1, clock.now())
    assert await store.shred_expired(4 * week) == 0  # acknowledged, but still within a longer retention
    assert await store.shred_expired(week) == 1
    with pytest.raises(CryptoError):
        await store.read_application(saved.id, "admin")
    row = sqlite3.connect(tmp_path / "node.db").execute("SELECT service_code, wrap_node FROM applications").fetchone()
    assert row == ("RES-01", None)  # metadata stays for statistics, the key is gone
    assert await store.shred_expired(week) == 0


async def test_every_personal_data_access_is_in_the_audit_chain(store: Store) -> None:
    aid = await store.create_applicant(APPLICANT, "admin")
    saved = await store.create_application("Шевченко", "Тарас", "1759013776", "RES-01", "admin", aid)
    await store.read_application(saved.id, "admin", "receipt")
    await store.find_applicants("admin", rnokpp="1759013776")
    async with store.db.execute("SELECT actor, action, entity, entity_id FROM audit ORDER BY seq") as cur:
        rows = await cur.fetchall()
    assert [tuple(r) for r in rows] == [
        ("admin", "create", "applicants", aid), ("admin", "create", "applications", saved.id),
        ("admin", "read", "applications", saved.id), ("admin", "read", "applicants", aid),
    ]
    assert await audit.verify_local(store.db) == []
    await store.db.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 2")
    assert any("altered" in p for p in await audit.verify_local(store.db))


async def test_hq_detects_forged_and_missing_audit_entries(store: Store, tmp_path: Path, clock: ManualClock) -> None:
    for _ in range(3):
        await store.create_application("Шевченко", "Тарас", "1759013776", "RES-01", "admin")
    async with store.db.execute("SELECT seq, payload FROM outbox WHERE stream = 'audit' ORDER BY seq") as cur:
        items = [(r[0], bytes(r[1])) async for r in cur]
    hq = await HQStore.open(tmp_path / "hq.db", clock)
    try:
        env = lambda first, payloads: Envelope("van-01", "audit", first, tuple(payloads), 1)  # noqa: E731
        assert (await hq.store_envelope(env(1, [items[0][1]]), "mqtt")).contiguous == 1
        # entry 2 edited on the way (or on the SD card) but re-hashed without the chain key
        forged = items[1][1].replace(b'"actor":"admin"', b'"actor":"nobody"')
        await hq.store_envelope(env(2, [forged, items[2][1]]), "mqtt")
        alerts = await hq_audit.alerts(hq.db)
        assert len(alerts) == 1 and alerts[0]["seq"] == 2 and "altered" in alerts[0]["problem"]
    finally:
        await hq.close()
    # and an intact chain raises nothing
    hq2 = await HQStore.open(tmp_path / "hq2.db", clock)
    try:
        await hq2.store_envelope(Envelope("van-01", "audit", 1, tuple(p for _, p in items), 1), "mqtt")
        assert (await hq2.stats())["audit_alerts"] == 0
    finally:
        await hq2.close()


async def test_receipts_read_together_share_one_commit_and_each_is_audited_before_shown(store: Store, tmp_path: Path) -> None:
    """Ten tablets opening receipts at once: ten durable audit entries, in far fewer COMMITs (group commit)."""
    saved = [await store.create_application("Шевченко", "Тарас", "1759013776", "RES-01", "admin") for _ in range(10)]
    commits: list[str] = []
    await run_sync(store.db, lambda conn: conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None))
    seen_by_other_connection: list[int] = []

    async def open_receipt(app_id: str) -> None:
        rec = await store.read_application(app_id, "admin", "receipt")
        assert rec["surname"] == "Шевченко"
        # By the time the data is shown, its audit entry is committed: another connection sees it.
        with sqlite3.connect(tmp_path / "node.db") as other:
            seen_by_other_connection.append(other.execute(
                "SELECT COUNT(*) FROM audit WHERE action = 'read' AND entity_id = ?", (app_id,)).fetchone()[0])

    await asyncio.gather(*(open_receipt(s.id) for s in saved))
    await run_sync(store.db, lambda conn: conn.set_trace_callback(None))
    assert seen_by_other_connection == [1] * 10
    assert 1 <= len(commits) < 10, commits
    assert await audit.verify_local(store.db) == []

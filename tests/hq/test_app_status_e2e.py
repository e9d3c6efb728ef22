"""Application status set at HQ reaches the van once; a stale edit never overrides a newer one (real Mosquitto, processes)."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest

from provisioning.keys import HQKeys, NodeBundle
from sync import reconcile
from sync.downlink import build
from tests.conftest import Broker, Proc, wait_until
from tests.functional.test_hq_commands import publish
from tests.hq.stack import OFFICER_PASSWORD, HqBrowser, Stack

pytestmark = pytest.mark.functional


def van_rows(db: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as c:
        return list(c.execute(sql, args).fetchall())


def test_status_flows_to_the_van_once_and_newer_wins(tmp_path: Path, hq_keys: HQKeys, bundle: NodeBundle, mosquitto: Broker,
                                                     procs: list[Proc]) -> None:
    st = Stack(tmp_path, mosquitto, bundle, procs)
    van = st.start_node()
    st.start_hq("--status-resend-after", "3")
    st.hq_user("olena.k", "records_officer")
    st.hq_user("petro", "viewer")
    saved = st.application()
    rid = saved["id"]

    viewer = HqBrowser(st.hq_url)
    viewer.login("petro", OFFICER_PASSWORD)
    status, _ = viewer.post(f"/records/{rid}/status", {"csrf": viewer.csrf(), "status": "in_progress"})
    assert status == 403
    assert viewer.api.get(f"/api/v1/records/{rid}/status")["status"] == "accepted"

    officer = HqBrowser(st.hq_url)
    officer.login("olena.k", OFFICER_PASSWORD)
    status, page = officer.post(f"/records/{rid}/status", {"csrf": officer.csrf(), "status": "issued"})
    assert status == 422  # accepted → issued skips the work: refused
    for new in ("in_progress", "ready"):
        status, page = officer.post(f"/records/{rid}/status", {"csrf": officer.csrf(), "status": new})
        assert status == 200 and saved["number"] in page  # redirected to the list
        wait_until(lambda new=new: st.van_status(rid) == new, 60, what=f"status {new} at the van")

    # HQ hears the van's acknowledgement of each edit; both are in HQ's audited history.
    def acked() -> list[dict[str, object]] | None:
        edits = officer.api.get(f"/api/v1/records/{rid}/status")["edits"]
        return edits if all(e["result"] == "applied" for e in edits) else None
    edits = wait_until(acked, 60, what="the van's acks at HQ")
    assert [(e["old"], e["status"], e["username"]) for e in edits] == [("accepted", "in_progress", "olena.k"), ("in_progress", "ready", "olena.k")]

    # Exactly once at the van: one applied row and one audit entry per edit, whatever HQ resent.
    applied = van_rows(st.node_db, "SELECT id, result FROM downlink_applied WHERE kind = 'recon' ORDER BY at")
    assert [r[1] for r in applied] == ["applied", "applied"]
    ready_hlc = int(van_rows(st.node_db, "SELECT hlc FROM app_status WHERE application_id = ?", rid)[0][0])

    # A stale edit (older HLC, new id: e.g. a delayed copy of an earlier change) is acknowledged but does not win.
    stale_id = uuid.uuid4().hex
    stale = reconcile.to_wire(reconcile.Edit(rid, "status", "in_progress", ready_hlc - 1000, reconcile.HQ), stale_id)
    publish(mosquitto, "mo/v1/van-01/down/recon", build(hq_keys.sign, "van-01", "recon", 900, [stale], ready_hlc - 1000))
    wait_until(lambda: van_rows(st.node_db, "SELECT 1 FROM downlink_applied WHERE id = ?", stale_id), 30, what="the stale edit at the van")
    assert st.van_status(rid) == "ready"
    # The same stale message again is a duplicate; a newer edit does win.
    publish(mosquitto, "mo/v1/van-01/down/recon", build(hq_keys.sign, "van-01", "recon", 901, [stale], ready_hlc - 1000))
    newer = reconcile.to_wire(reconcile.Edit(rid, "status", "issued", ready_hlc + 1, reconcile.HQ), uuid.uuid4().hex)
    publish(mosquitto, "mo/v1/van-01/down/recon", build(hq_keys.sign, "van-01", "recon", 902, [newer], ready_hlc + 1))
    wait_until(lambda: st.van_status(rid) == "issued", 30, what="the newer edit at the van")
    status_audits = van_rows(st.node_db, "SELECT reason FROM audit WHERE action = 'status' AND entity_id = ? ORDER BY seq", rid)
    assert [r[0] for r in status_audits] == ["status in_progress", "status ready", "status issued"]
    assert van_rows(st.node_db, "SELECT COUNT(*) FROM downlink_applied WHERE id = ?", stale_id)[0][0] == 1

    # The van's receipt shows the status HQ set.
    with van.opener.open(van.base + f"/applications/{rid}/receipt", timeout=15) as r:
        html = r.read().decode()
    assert 'id="application-status">Видано<' in html


def test_status_set_while_the_van_is_off_arrives_once(tmp_path: Path, hq_keys: HQKeys, bundle: NodeBundle, mosquitto: Broker,
                                                      procs: list[Proc]) -> None:
    st = Stack(tmp_path, mosquitto, bundle, procs)
    st.start_node()
    st.start_hq("--status-resend-after", "1")
    st.hq_user("olena.k", "records_officer")
    rid = st.application()["id"]
    node = procs[0]
    assert node.terminate() == 0  # the ignition goes off
    officer = HqBrowser(st.hq_url)
    officer.login("olena.k", OFFICER_PASSWORD)
    status, _ = officer.post(f"/records/{rid}/status", {"csrf": officer.csrf(), "status": "in_progress"})
    assert status == 200

    def sends() -> int:
        with sqlite3.connect(st.hq_dir / "hq.db") as c:
            return int(c.execute("SELECT sends FROM status_edits WHERE record_id = ?", (rid,)).fetchone()[0])
    wait_until(lambda: sends() >= 3, 60, what="HQ resending while the van is off")
    st.start_node()  # the broker hands over every queued copy
    wait_until(lambda: st.van_status(rid) == "in_progress", 60, what="the status at the van")
    wait_until(lambda: officer.api.get(f"/api/v1/records/{rid}/status")["edits"][0]["result"] == "applied", 60, what="the ack at HQ")
    assert van_rows(st.node_db, "SELECT COUNT(*) FROM downlink_applied WHERE kind = 'recon' AND result = 'applied'")[0][0] == 1
    assert van_rows(st.node_db, "SELECT COUNT(*) FROM audit WHERE action = 'status'")[0][0] == 1


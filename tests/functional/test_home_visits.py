"""A home visit planned at HQ reaches the van sealed, opens only after login, and is started and finished."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from hq.planning import sealed_assignment
from provisioning.keys import HQKeys, NodeBundle
from sync.downlink import build
from tests.conftest import ADMIN_PASSWORD, Broker, Proc, free_port, http_ok, mobile_office_cmd, spawn, start_mosquitto, wait_until
from tests.functional.test_hq_commands import publish
from tests.helpers import ApiClient
from tests.hq.stack import OFFICER_PASSWORD, HqBrowser, Stack

pytestmark = pytest.mark.functional


def page(api: ApiClient, path: str) -> str:
    with api.opener.open(api.base + path, timeout=15) as r:
        return str(r.read().decode())


def test_sealed_home_visit(tmp_path: Path, hq_keys: HQKeys, bundle: NodeBundle, mosquitto: Broker, procs: list[Proc]) -> None:
    port = free_port()
    node = spawn(mobile_office_cmd("node", "--bundle", str(bundle.directory), "--data-dir", str(tmp_path / "node"), "--broker", mosquitto.url,
                                   "--gpsd", f"127.0.0.1:{free_port()}", "--http-host", "127.0.0.1", "--http-port", str(port)), tmp_path / "node.log")
    procs.append(node)
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 30, what="node")
    api = ApiClient(f"http://127.0.0.1:{port}")
    wait_until(lambda: api.get("/api/v1/status")["link"]["mqtt"] == "up", 30, what="node on the broker")

    details = {"name": "Гнатюк Ганна Петрівна", "address": "вул. Тестова, 7, кв. 2", "purpose": "оформлення субсидії", "categories": ["age80"]}
    # Assigned to the administrator who logs in below: nobody else (but a supervisor) sees it (issue 16).
    item = sealed_assignment(hq_keys.node_seal_keys()["van-01"], "van-01", details, "2026-11-23", "admin")
    # Delivered while the van's store is still locked: it is kept sealed as received.
    publish(mosquitto, "mo/v1/van-01/down/assign", build(hq_keys.sign, "van-01", "assign", 1, [item], 1))
    db_file = tmp_path / "node" / "node.db"
    import sqlite3
    wait_until(lambda: sqlite3.connect(db_file).execute("SELECT COUNT(*) FROM visits").fetchone()[0] == 1, 30, what="the assignment")

    api.login("admin", ADMIN_PASSWORD)
    html = page(api, "/visits")
    assert "Гнатюк Ганна Петрівна" in html and "оформлення субсидії" in html
    csrf = re.search(r'name="csrf" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
    for action in ("start", "finish"):
        req_body = f"csrf={csrf}".encode()
        import urllib.request
        req = urllib.request.Request(f"{api.base}/visits/{item['id']}/{action}", data=req_body, method="POST")
        with api.opener.open(req, timeout=15) as r:
            assert r.status == 200
    assert "finished" in page(api, "/visits")
    # The person's name never lies on the SD card in plaintext.
    for f in (db_file, db_file.with_name("node.db-wal")):
        if f.exists():
            assert "Гнатюк".encode() not in f.read_bytes()


def _van_visit(db_file: Path, vid: str) -> tuple[object, ...] | None:
    with sqlite3.connect(db_file) as c:
        return c.execute("SELECT status, planned_date FROM visits WHERE id = ?", (vid,)).fetchone()  # type: ignore[no-any-return]


def test_assignment_reaches_a_van_offline_then_cancel_and_reschedule(tmp_path: Path, bundle: NodeBundle, procs: list[Proc]) -> None:
    """The broker loses what it queued for the offline van; HQ resends until the van acknowledges (issue 19 item 5)."""
    broker = start_mosquitto(tmp_path / "mq", persistence=False)
    try:
        st = Stack(tmp_path, broker, bundle, procs)
        van = st.start_node()
        node = procs[-1]
        st.start_hq("--status-resend-after", "2", "--ack-poll-interval", "0.5")
        st.hq_user("dispatch", "dispatcher")
        wait_until(lambda: van.get("/api/v1/status")["link"]["mqtt"] == "up", 30, what="node on the broker")
        node.terminate()  # the van goes offline

        hq = HqBrowser(st.hq_url)
        hq.login("dispatch", OFFICER_PASSWORD)
        status, _ = hq.post("/visits", {"csrf": hq.csrf(), "node_id": "van-01", "name": "Гнатюк Ганна", "address": "вул. Тестова, 7",
                                        "lat": "47.9105", "lon": "33.3918", "planned_date": "2099-01-10", "category": "age80"})
        assert status == 200
        [visit] = hq.api.get("/api/v1/visits?from=2099-01-01")["visits"]
        vid = visit["id"]
        assert visit["delivery"] in ("sent", "unsent") and visit["has_point"] is True and "lat" not in visit
        # What the broker held for the van is lost: only HQ's resend can bring it now.
        broker.stop()
        broker.start()
        st.start_node()
        wait_until(lambda: _van_visit(st.node_db, vid) is not None, 90, what="the assignment at the van after reconnection")
        assert _van_visit(st.node_db, vid) == ("assigned", "2099-01-10")

        def delivered() -> dict[str, object] | None:
            [v] = hq.api.get("/api/v1/visits?from=2099-01-01")["visits"]
            return v if v["delivery"] == "delivered" else None
        v = wait_until(delivered, 60, what="HQ to see the van's acknowledgement")
        assert v["sends"] >= 2  # type: ignore[index]
        assert "Фургон отримав" in hq.get("/visits")

        status, _ = hq.post(f"/visits/{vid}/reschedule", {"csrf": hq.csrf(), "planned_date": "2099-01-12"})
        assert status == 200
        wait_until(lambda: _van_visit(st.node_db, vid) == ("assigned", "2099-01-12"), 60, what="the new date at the van")
        status, _ = hq.post(f"/visits/{vid}/cancel", {"csrf": hq.csrf()})
        assert status == 200
        wait_until(lambda: _van_visit(st.node_db, vid) == ("cancelled", "2099-01-12"), 60, what="the cancellation at the van")
        v = wait_until(delivered, 60, what="the cancellation acknowledged")
        assert v["state"] == "cancelled" and v["version"] == 2  # type: ignore[index]
        status, _ = hq.post(f"/visits/{vid}/reschedule", {"csrf": hq.csrf(), "planned_date": "2099-01-15"})
        assert status == 422  # a cancelled visit stays cancelled
    finally:
        broker.stop()

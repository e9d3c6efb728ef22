"""The walking skeleton end to end against real Mosquitto, with the node killed mid-way."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import pytest

from provisioning.keys import NodeBundle
from tests.conftest import ADMIN_PASSWORD, Broker, Proc, free_port, http_ok, mobile_office_cmd, spawn, wait_until
from tests.helpers import ApiClient, hq_token

pytestmark = pytest.mark.functional

APPLICANTS = [
    ("Шевченко", "Тарас", "1759013776", "RES-01"),
    ("Українка", "Леся", "3184710691", "SOC-01"),
    ("Франко", "Іван", "1759013776", "PEN-01"),
]


def start_node(bundle: NodeBundle, data: Path, broker: Broker, port: int, procs: list[Proc], log: Path) -> Proc:
    p = spawn(
        mobile_office_cmd(
            "node", "--bundle", str(bundle.directory), "--data-dir", str(data), "--broker", broker.url,
            "--gpsd", f"127.0.0.1:{free_port()}", "--http-host", "127.0.0.1", "--http-port", str(port), "--ack-timeout", "2",
        ),
        log,
    )
    procs.append(p)
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 30, what="node to serve")
    return p


def start_hq(hq_dir: Path, broker: Broker, port: int, procs: list[Proc], log: Path) -> Proc:
    p = spawn(mobile_office_cmd("hq", "--hq-data-dir", str(hq_dir), "--hq-broker", broker.url, "--hq-host", "127.0.0.1", "--hq-port", str(port)), log)
    procs.append(p)
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 30, what="HQ to serve")
    return p


def test_records_survive_node_kill_and_reach_hq_exactly_once(tmp_path: Path, bundle: NodeBundle, mosquitto: Broker, procs: list[Proc]) -> None:
    hq_dir = bundle.directory.parent / "hq"
    node_port, hq_port = free_port(), free_port()
    # HQ runs once so its persistent session exists, then goes away: nothing can be acked.
    hq = start_hq(hq_dir, mosquitto, hq_port, procs, tmp_path / "hq.log")
    token = hq_token(hq_dir)
    wait_until(lambda: ApiClient(f"http://127.0.0.1:{hq_port}", token).get("/api/v1/stats") is not None, what="HQ stats")
    assert hq.terminate() == 0

    node = start_node(bundle, tmp_path / "node", mosquitto, node_port, procs, tmp_path / "node.log")
    api = ApiClient(f"http://127.0.0.1:{node_port}")
    api.login("admin", ADMIN_PASSWORD)
    saved = []
    for surname, given, rnokpp, code in APPLICANTS:
        status, doc = api.request("POST", "/api/v1/applications", {"surname": surname, "given_name": given, "rnokpp": rnokpp, "service_code": code})
        assert status == 201, doc
        saved.append(doc)
    assert api.get("/api/v1/status")["outbox"]["pending"] >= len(APPLICANTS)

    # Power cut between submit and delivery.
    node.process.send_signal(signal.SIGKILL)
    node.process.wait(10)

    start_hq(hq_dir, mosquitto, hq_port, procs, tmp_path / "hq2.log")
    node = start_node(bundle, tmp_path / "node", mosquitto, node_port, procs, tmp_path / "node2.log")
    api = ApiClient(f"http://127.0.0.1:{node_port}")
    wait_until(lambda: api.get("/api/v1/status")["outbox"]["by_stream"]["rec"]["pending"] == 0, 60, what="records to be acked")

    # Resends are allowed on the wire; HQ must still hold each record once.
    db = sqlite3.connect(hq_dir / "hq.db")
    rows = db.execute("SELECT record_id, number FROM records ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == [s["id"] for s in saved]
    assert [r[1] for r in rows] == [s["number"] for s in saved]
    assert db.execute("SELECT COUNT(*) FROM items WHERE node_id = 'van-01' AND stream = 'rec'").fetchone()[0] == len(APPLICANTS)
    fleet = ApiClient(f"http://127.0.0.1:{hq_port}", token).get("/api/v1/fleet")
    assert fleet[0]["node_id"] == "van-01" and fleet[0]["records"] == len(APPLICANTS)
    # Nothing personal crossed in clear: the names are not in HQ's database file.
    raw = (hq_dir / "hq.db").read_bytes()
    for surname, _given, rnokpp, _ in APPLICANTS:
        assert surname.encode() not in raw and rnokpp.encode() not in raw

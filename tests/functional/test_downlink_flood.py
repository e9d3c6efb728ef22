"""Commands and home-visit assignments from HQ all arrive while the van takes applications as fast as it can (issue 15, item 10).

The van's message handler and its intake write to one SQLite file; a handler
that meets a locked database must leave the message unacknowledged at the
broker (redelivered), never acknowledged and lost.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from hq.planning import sealed_assignment
from provisioning.keys import HQKeys, NodeBundle
from sync.downlink import build, command
from tests.conftest import ADMIN_PASSWORD, Broker, Proc, free_port, http_ok, mobile_office_cmd, spawn, wait_until
from tests.functional.test_hq_commands import publish
from tests.helpers import ApiClient

pytestmark = pytest.mark.functional

COMMANDS = 40
ASSIGNMENTS = 20
INTAKE_THREADS = 3


def test_every_downlink_arrives_while_intake_floods(tmp_path: Path, hq_keys: HQKeys, bundle: NodeBundle, mosquitto: Broker,
                                                    procs: list[Proc]) -> None:
    port = free_port()
    node = spawn(mobile_office_cmd("node", "--bundle", str(bundle.directory), "--data-dir", str(tmp_path / "node"), "--broker", mosquitto.url,
                                   "--gpsd", f"127.0.0.1:{free_port()}", "--http-host", "127.0.0.1", "--http-port", str(port),
                                   "--trust-kernel-clock", "assume"),  # commands wait for trusted time; this clock is right
                 tmp_path / "node.log")
    procs.append(node)
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 30, what="node")
    api = ApiClient(f"http://127.0.0.1:{port}")
    api.login("admin", ADMIN_PASSWORD)
    wait_until(lambda: api.get("/api/v1/status")["link"]["mqtt"] == "up", 30, what="node on the broker")

    stop = threading.Event()
    saved: list[int] = []
    errors: list[object] = []

    def intake() -> None:
        client = ApiClient(f"http://127.0.0.1:{port}")
        client.login("admin", ADMIN_PASSWORD)
        while not stop.is_set():
            status, doc = client.request("POST", "/api/v1/applications",
                                         {"surname": "Шевченко", "given_name": "Тарас", "rnokpp": "1759013776", "service_code": "RES-01"})
            if status == 201:
                saved.append(1)
            else:
                errors.append((status, doc))

    threads = [threading.Thread(target=intake, daemon=True) for _ in range(INTAKE_THREADS)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(saved) >= 20, 60, what="intake to run")
        ids = []
        for i in range(max(COMMANDS, ASSIGNMENTS)):
            if i < COMMANDS:
                ids.append(("cmd", f"flood-c{i}"))
                publish(mosquitto, "mo/v1/van-01/down/cmd",
                        build(hq_keys.sign, "van-01", "cmd", i + 1, [command(f"flood-c{i}", "sync_now", time.time() + 3600)], i + 1))
            if i < ASSIGNMENTS:
                item = sealed_assignment(hq_keys.node_seal_keys()["van-01"], "van-01",
                                         {"name": f"Особа {i}", "address": "вул. Тестова, 1", "purpose": "субсидія", "categories": []},
                                         "2026-11-23", "olena", visit_id=f"flood-v{i}")
                ids.append(("assign", f"flood-v{i}"))
                publish(mosquitto, "mo/v1/van-01/down/assign", build(hq_keys.sign, "van-01", "assign", i + 1, [item], i + 1))
        db_file = tmp_path / "node" / "node.db"

        def applied() -> set[tuple[str, str]]:
            with sqlite3.connect(db_file, timeout=30) as db:
                return {(str(k), str(i)) for k, i in db.execute("SELECT kind, id FROM downlink_applied WHERE id LIKE 'flood-%'")}

        wait_until(lambda: applied() == set(ids), 180, interval=0.5, what="every command and assignment to be applied")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, (errors[:3], node.output()[-4000:])
    with sqlite3.connect(db_file, timeout=30) as db:
        assert db.execute("SELECT COUNT(*) FROM visits WHERE id LIKE 'flood-v%'").fetchone()[0] == ASSIGNMENTS
        results = dict(db.execute("SELECT result, COUNT(*) FROM downlink_applied WHERE id LIKE 'flood-%' GROUP BY result").fetchall())
    assert results == {"applied": COMMANDS + ASSIGNMENTS}
    assert len(saved) > 20

"""A van whose data directory is wiped (SD card replaced) and the same bundle started again:
every application of the new database reaches HQ, none is taken for a resend of the old ones (issue 15, item 3)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from hq.db import connect
from provisioning.keys import NodeBundle
from tests.conftest import ADMIN_PASSWORD, Broker, Proc, free_port, http_ok, mobile_office_cmd, spawn, wait_until
from tests.functional.test_e2e_skeleton import start_node
from tests.helpers import ApiClient

pytestmark = pytest.mark.functional

PEOPLE = [("Шевченко", "Тарас", "1759013776", "RES-01"), ("Українка", "Леся", "3184710691", "SOC-01")]


def submit_and_deliver(api: ApiClient) -> list[dict[str, str]]:
    api.login("admin", ADMIN_PASSWORD)
    out = []
    for surname, given, rnokpp, code in PEOPLE:
        status, doc = api.request("POST", "/api/v1/applications", {"surname": surname, "given_name": given, "rnokpp": rnokpp, "service_code": code})
        assert status == 201, doc
        out.append(doc)
    wait_until(lambda: api.get("/api/v1/status")["outbox"]["by_stream"]["rec"]["pending"] == 0, 90, what="records to be acked by HQ")
    return out


def query(target: Path | str, sql: str) -> list[tuple[Any, ...]]:
    async def run() -> list[tuple[Any, ...]]:
        db = await connect(target)
        try:
            async with db.execute(sql) as cur:
                return list(await cur.fetchall())
        finally:
            await db.close()
    return asyncio.run(run())


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_reflashed_van_delivers_every_new_application(tmp_path: Path, bundle: NodeBundle, mosquitto: Broker, procs: list[Proc],
                                                      backend: str, request: pytest.FixtureRequest) -> None:
    hq_dir = bundle.directory.parent / "hq"
    target: Path | str = hq_dir / "hq.db"
    db_flag: list[str] = []
    if backend == "postgresql":
        target = str(request.getfixturevalue("pg_url"))
        db_flag = ["--db", target]
    data = tmp_path / "node"
    # HQ's copy of the enrolment bundle: the node takes the admin keyslots off the card it was installed on
    issued = tmp_path / "issued-bundle"
    shutil.copytree(bundle.directory, issued)
    node_port, hq_port = free_port(), free_port()
    procs.append(spawn(mobile_office_cmd("hq", "--hq-data-dir", str(hq_dir), "--hq-broker", mosquitto.url, "--hq-host", "127.0.0.1",
                                         "--hq-port", str(hq_port), *db_flag), tmp_path / "hq.log"))
    wait_until(lambda: http_ok(f"http://127.0.0.1:{hq_port}/healthz"), 30, what="HQ to serve")
    node = start_node(bundle, data, mosquitto, node_port, procs, tmp_path / "node.log")
    first = submit_and_deliver(ApiClient(f"http://127.0.0.1:{node_port}"))
    assert node.terminate() == 0

    # the SD card is replaced; the same enrolment bundle is installed again
    shutil.rmtree(data)
    shutil.rmtree(bundle.directory)
    shutil.copytree(issued, bundle.directory)
    start_node(bundle, data, mosquitto, node_port, procs, tmp_path / "node2.log")
    second = submit_and_deliver(ApiClient(f"http://127.0.0.1:{node_port}"))

    held = {r[0] for r in query(target, "SELECT record_id FROM records WHERE node_id = 'van-01'")}
    instances = query(target, "SELECT instance, ordinal FROM node_instances WHERE node_id = 'van-01' ORDER BY ordinal")
    assert held == {d["id"] for d in first + second}  # both databases' seq 1 and 2, each once
    assert len(instances) == 2 and all(len(i) == 16 for i, _ in instances)
    fleet = ApiClient(f"http://127.0.0.1:{hq_port}").get("/api/v1/fleet")
    assert fleet[0]["records"] == 4
    # (the dashboard's new_instance alert is computed from node_instances: tests/sync/test_hostile.py)

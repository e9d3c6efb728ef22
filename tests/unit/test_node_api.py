"""The node's JSON API in-process (no broker reachable: records stay in the outbox)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from edge.app import create_app
from edge.config import NodeConfig
from mobile_office import nodecli
from provisioning.keys import NodeBundle
from tests.conftest import ADMIN_PASSWORD, free_port


def node_config(bundle: NodeBundle, data_dir: Path) -> NodeConfig:
    """Built the way production builds it (mobile_office/nodecli.py from the settings registry); no broker reachable, no GPS."""
    cfg = nodecli.node_config(bundle.directory, None, {"data_dir": str(data_dir), "broker": f"mqtt://127.0.0.1:{free_port()}", "https": "off",
                                                              "trust_kernel_clock": "assume"})
    cfg.gpsd = None
    return cfg


@pytest.fixture
async def client(bundle: NodeBundle, tmp_path: Path) -> AsyncIterator[TestClient]:
    app = create_app(node_config(bundle, tmp_path / "node"))
    async with TestClient(TestServer(app)) as c:
        yield c


async def login(client: TestClient) -> None:
    r = await client.post("/api/v1/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status == 200, await r.text()


async def test_healthz(client: TestClient) -> None:
    r = await client.get("/healthz")
    assert r.status == 200 and await r.json() == {"status": "ok"}


async def test_wrong_password_is_refused_and_store_stays_locked(client: TestClient) -> None:
    r = await client.post("/api/v1/login", json={"username": "admin", "password": "не той"})
    assert r.status == 401
    assert (await r.json())["error"]["code"] == "bad_credentials"
    assert (await (await client.get("/api/v1/status")).json())["store"]["locked"] is True


async def test_application_needs_login(client: TestClient) -> None:
    r = await client.post("/api/v1/applications", json={"surname": "Шевченко", "given_name": "Тарас", "rnokpp": "1759013776", "service_code": "RES-01"})
    assert r.status == 401
    assert set((await r.json())["error"]) == {"code", "message", "fields"}


async def test_bad_rnokpp_gives_422_and_stores_nothing(client: TestClient, tmp_path: Path) -> None:
    await login(client)
    r = await client.post("/api/v1/applications", json={"surname": "Шевченко", "given_name": "Тарас", "rnokpp": "1759013775", "service_code": "RES-01"})
    assert r.status == 422
    body = await r.json()
    assert body["error"]["code"] == "validation_failed"
    assert set(body["error"]["fields"]) == {"rnokpp"}
    assert "контрольну цифру" in body["error"]["fields"]["rnokpp"]
    db = sqlite3.connect(tmp_path / "node" / "node.db")
    assert db.execute("SELECT COUNT(*) FROM applications").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM outbox WHERE stream = 'rec'").fetchone()[0] == 0


async def test_every_bad_field_is_reported_at_once(client: TestClient) -> None:
    await login(client)
    r = await client.post("/api/v1/applications", json={"surname": "", "given_name": "John", "rnokpp": "12", "service_code": "NOPE-1"})
    assert r.status == 422
    assert set((await r.json())["error"]["fields"]) == {"surname", "given_name", "rnokpp", "service_code"}


async def test_submit_commits_record_and_outbox_entry(client: TestClient, tmp_path: Path) -> None:
    await login(client)
    r = await client.post("/api/v1/applications", json={"surname": "Шевченко", "given_name": "Тарас", "rnokpp": "1759013776", "service_code": "res-01"})
    assert r.status == 201
    doc = await r.json()
    assert set(doc) == {"id", "number"} and doc["number"].startswith("VAN-01-")
    db = sqlite3.connect(tmp_path / "node" / "node.db")
    assert db.execute("SELECT service_code FROM applications WHERE id = ?", (doc["id"],)).fetchone() == ("RES-01",)
    assert db.execute("SELECT COUNT(*) FROM outbox WHERE stream = 'rec'").fetchone()[0] == 1
    status = await (await client.get("/api/v1/status")).json()
    # the record and its audit entry wait together for HQ
    assert status["outbox"]["by_stream"]["rec"] == {"pending": 1, "delivered": 0}
    assert status["outbox"]["by_stream"]["audit"] == {"pending": 1, "delivered": 0}
    assert status["link"]["mqtt"] == "down"
    assert set(status["gps"]) >= {"mode", "lat", "lon", "time"}


async def test_non_json_body_is_refused(client: TestClient) -> None:
    await login(client)
    r = await client.post("/api/v1/applications", data="surname=x", headers={"Content-Type": "text/plain"})
    assert r.status == 415


async def test_full_outbox_refuses_intake_and_drops_nothing(bundle: NodeBundle, tmp_path: Path) -> None:
    from sync.outbox import Limits

    cfg = node_config(bundle, tmp_path / "node")
    cfg.limits = Limits({**Limits().per_stream, "rec": 4000})
    async with TestClient(TestServer(create_app(cfg))) as c:
        await login(c)
        accepted, refused = 0, None
        for _ in range(20):
            r = await c.post("/api/v1/applications", json={"surname": "Шевченко", "given_name": "Тарас", "rnokpp": "1759013776", "service_code": "RES-01"})
            if r.status == 201:
                accepted += 1
                continue
            refused = r
            break
        assert refused is not None and refused.status == 507 and accepted >= 1
        body = await refused.json()
        assert body["error"]["code"] == "storage_full" and "не прийнято" in body["error"]["message"]
        status = await (await c.get("/api/v1/status")).json()
        assert status["outbox"]["usage"]["rec"]["limit"] == 4000
    db = sqlite3.connect(tmp_path / "node" / "node.db")
    # every record the administrator saw as saved is still there, waiting for HQ
    assert db.execute("SELECT COUNT(*) FROM applications").fetchone()[0] == accepted
    assert db.execute("SELECT COUNT(*) FROM outbox WHERE stream = 'rec'").fetchone()[0] == accepted

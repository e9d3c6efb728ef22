"""The van's uplink loop crashes once: logged at once, restarted, shown in /api/v1/status, and the record still reaches HQ.

Real Mosquitto, the van's and HQ's real apps in-process (so one method can be made to raise), real SQLite files.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from edge.app import create_app as create_node
from hq import tokens
from hq.app import STORE as HQ_STORE
from hq.app import HQConfig
from hq.app import create_app as create_hq
from provisioning.keys import HQKeys, NodeBundle
from sync import outbox
from sync.uplink import Uplink
from tests.conftest import ADMIN_PASSWORD, Broker
from tests.unit.test_node_api import node_config

pytestmark = pytest.mark.functional


async def until(pred: Callable[[], Any], what: str, timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await pred():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_uplink_crash_is_logged_restarted_shown_and_delivers(tmp_path: Path, hq_keys: HQKeys, bundle: NodeBundle, mosquitto: Broker,
                                                                   monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="kit.tasks")
    real_drain = Uplink._drain_once
    crashed = 0

    async def drain_once(self: Uplink, link: Any) -> bool:
        nonlocal crashed
        assert self._db is not None
        rec = (await outbox.streams(self._db)).get("rec")
        if rec is not None and rec.pending and not crashed:  # the first time a record waits to go
            crashed += 1
            raise RuntimeError("injected uplink fault")  # not a link error: nothing inside the loop catches it
        return await real_drain(self, link)

    monkeypatch.setattr(Uplink, "_drain_once", drain_once)

    hq_cfg = HQConfig(data_dir=tmp_path / "hqdata", keys=hq_keys, broker=mosquitto.url, host="127.0.0.1", mqtt_version="5")
    hq_cfg.data_dir.mkdir()
    ncfg = node_config(bundle, tmp_path / "node")
    ncfg.broker = mosquitto.url
    async with TestClient(TestServer(create_hq(hq_cfg))) as hq, TestClient(TestServer(create_node(ncfg))) as van:
        health = await (await hq.get("/healthz")).json()
        bearer = {"Authorization": "Bearer " + await tokens.issue(hq.app[HQ_STORE].db, "tests", "viewer", 0.0)}  # HQ's API needs one
        assert health["status"] == "ok" and health["loops"]["hq-ingest"]["state"] == "running"

        async def status() -> dict[str, Any]:
            return dict(await (await van.get("/api/v1/status")).json())

        async def mqtt_up() -> bool:
            return (await status())["link"]["mqtt"] == "up"

        await until(mqtt_up, "the van on the broker")
        assert (await status())["loops"]["uplink"] == {"state": "running", "restarts": 0, "last_error": None, "last_error_at": None}

        r = await van.post("/api/v1/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        assert r.status == 200
        r = await van.post("/api/v1/applications", json={"surname": "Шевченко", "given_name": "Тарас", "rnokpp": "1759013776",
                                                         "service_code": "RES-01"})
        assert r.status == 201, await r.text()

        async def restarted() -> bool:
            return bool((await status())["loops"]["uplink"]["restarts"] == 1)

        await until(restarted, "the uplink loop to be restarted")
        loop_status = (await status())["loops"]["uplink"]
        assert crashed == 1 and loop_status["last_error"] == "RuntimeError"
        logged = [r for r in caplog.records if "background loop uplink crashed" in r.getMessage()]
        assert len(logged) == 1 and logged[0].exc_info is not None and "injected uplink fault" in str(logged[0].exc_info[1])

        async def delivered() -> bool:
            return bool((await (await hq.get("/api/v1/stats", headers=bearer)).json())["records"] == 1
                        and (await status())["outbox"]["pending"] == 0)

        await until(delivered, "the record at HQ and acked on the van")
        assert (await status())["loops"]["uplink"]["state"] == "running"
        assert (await (await hq.get("/api/v1/stats", headers=bearer)).json())["records"] == 1  # exactly once

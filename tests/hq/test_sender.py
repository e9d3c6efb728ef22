"""HQ's one downlink sender: sequence, signature, injected clock, HLC, publish; "not connected" is one answer."""

from __future__ import annotations

import asyncio
import html
import json
import re
import threading
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from aiohttp.test_utils import TestClient, TestServer
from paho.mqtt.enums import CallbackAPIVersion

from hq import users
from hq.app import DOWNLINK, STORE, HQConfig, create_app
from hq.sender import COMMAND_TTL, DownlinkSender, NotConnected
from hq.store import HQStore
from provisioning.keys import HQKeys, NodeBundle
from sync.clock import ManualClock, SystemClock
from sync.envelope import decode, topic_catalog
from sync.ingest import Ingest, MqttIngestWorker
from sync.mqtt import MqttSettings
from tests.conftest import Broker, free_port

T0 = 1_790_000_000.0
CHIEF_PASSWORD = "Начальник-пароль-1"


async def until(pred: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class Listener:
    """A plain MQTT client on the vans' side of the broker: what HQ published, as it arrived."""

    def __init__(self, broker: Broker, topics: list[str]) -> None:
        self.got: list[tuple[str, bytes, bool]] = []
        self.subscribed = threading.Event()
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id="test-van-side", protocol=paho.MQTTv5)
        self.c.on_connect = lambda c, *_: c.subscribe([(t, 1) for t in topics])
        self.c.on_subscribe = lambda *_: self.subscribed.set()
        self.c.on_message = lambda _c, _u, m: self.got.append((m.topic, bytes(m.payload), bool(m.retain)))
        self.c.connect("127.0.0.1", broker.port)
        self.c.loop_start()

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


async def test_sender_numbers_signs_and_stamps_from_the_injected_clock(tmp_path: Path, hq_keys: HQKeys, mosquitto: Broker) -> None:
    clock = ManualClock(T0)
    store = await HQStore.open(tmp_path / "hq.db", clock)
    ingest = Ingest(store, lambda _n: None, hq_keys.sign, clock)  # type: ignore[arg-type]
    worker = MqttIngestWorker(ingest, MqttSettings(url=mosquitto.url, client_id="hq-sender-test"), SystemClock())
    sender = DownlinkSender(store, hq_keys, worker, ingest.hlc, clock)
    try:
        # Not connected: one error type, and no sequence number spent on nothing.
        with pytest.raises(NotConnected) as exc:
            await sender.command("van-01", "c-0", "lock")
        assert exc.value.status == 503 and exc.value.code == "broker_down"
        assert exc.value.message == "Немає зв'язку з брокером: команду не надіслано"
        async with store.db.execute("SELECT COUNT(*) FROM down_seq") as cur:
            assert (await cur.fetchone()) == (0,)

        run = asyncio.create_task(worker.run())
        listener = Listener(mosquitto, ["mo/v1/van-01/down/#", topic_catalog()])
        try:
            await until(lambda: worker.connected and listener.subscribed.is_set(), "HQ and the listener on the broker")
            assert await sender.command("van-01", "c-1", "lock") == 1
            clock.advance(60)
            assert await sender.send("van-01", "assign", [{"id": "v-1", "kind": "home_visit"}]) == 1  # own stream, own numbering
            assert await sender.command("van-01", "c-2", "sync_now") == 2
            await sender.catalog(7, {"services": [], "version": 7})
            await until(lambda: len(listener.got) == 4, "four downlinks")
        finally:
            listener.close()
            run.cancel()
            with pytest.raises(asyncio.CancelledError):
                await run

        envs = {(t, decode(p, lambda _n: hq_keys.sign_public).first_seq): (decode(p, lambda _n: hq_keys.sign_public), r)
                for t, p, r in listener.got}
        cmd1, _ = envs[("mo/v1/van-01/down/cmd", 1)]
        cmd2, _ = envs[("mo/v1/van-01/down/cmd", 2)]
        assert cmd1.downlink and cmd1.stream == "cmd" and cmd1.node_id == "van-01"
        assert json.loads(cmd1.items[0])["expires"] == T0 + COMMAND_TTL  # HQ's clock, not the machine's
        assert json.loads(cmd2.items[0])["expires"] == T0 + 60 + COMMAND_TTL
        assert cmd2.hlc > cmd1.hlc  # every send ticks HQ's one HLC
        cat, _retained = envs[(topic_catalog(), 7)]
        assert cat.node_id == "all" and json.loads(cat.items[0])["version"] == 7
        assert sender.sent == 4
        with pytest.raises(ValueError):
            await sender.send("van-01", "ack", [])  # acks belong to the ingest's transaction
    finally:
        await store.close()


async def test_not_connected_is_rendered_once_for_pages_and_api(tmp_path: Path, hq_keys: HQKeys, bundle: NodeBundle) -> None:
    """No broker at all: every sending page answers 503 broker_down in Ukrainian, and nothing half-sent is kept."""
    cfg = HQConfig(data_dir=tmp_path / "hqdata", keys=hq_keys, broker=f"mqtt://127.0.0.1:{free_port()}", host="127.0.0.1")
    cfg.data_dir.mkdir()
    app = create_app(cfg)
    async with TestClient(TestServer(app)) as c:
        store = app[STORE]
        await users.add_user(store.db, "chief", "admin", CHIEF_PASSWORD, cfg.clock.now())
        await store.record_status("van-01", "online", cfg.clock.now())
        assert not app[DOWNLINK].connected
        pre = re.search(r'name="csrf" value="([^"]+)"', await (await c.get("/login")).text())
        assert pre is not None  # the login form's own CSRF token (kit/hardening.py)
        r = await c.post("/login", data={"csrf": pre.group(1), "username": "chief", "password": CHIEF_PASSWORD}, allow_redirects=False)
        assert r.status == 303
        m = re.search(r'name="csrf" value="([^"]+)"', await (await c.get("/")).text())
        assert m is not None
        csrf = m.group(1)

        r = await c.post("/commands", data={"csrf": csrf, "node_id": "van-01", "kind": "lock"})
        assert r.status == 503 and "Немає зв'язку з брокером: команду не надіслано" in html.unescape(await r.text())
        r = await c.post("/commands", data={"csrf": csrf, "node_id": "van-01", "kind": "lock"}, headers={"Accept": "application/json"})
        assert r.status == 503
        assert await r.json() == {"error": {"code": "broker_down", "message": "Немає зв'язку з брокером: команду не надіслано", "fields": {}}}

        r = await c.post("/visits", data={"csrf": csrf, "node_id": "van-01", "name": "Особа", "address": "вул. Соборна, 1"},
                         headers={"Accept": "application/json"})
        assert r.status == 503 and (await r.json())["error"]["message"] == "Немає зв'язку з брокером: призначення не надіслано"

        r = await c.post("/trips", data={"csrf": csrf, "node_id": "van-01", "title": "Виїзд", "kind": "van",
                                         "place": "", "lat": "47.9", "lon": "33.4", "from": "", "to": "", "purpose": "remote", "name": "Двір"},
                         headers={"Accept": "application/json"})
        assert r.status == 503 and (await r.json())["error"] == {"code": "broker_down", "message": "Немає зв'язку з брокером: план не надіслано",
                                                                  "fields": {}}
        async with store.db.execute("SELECT COUNT(*) FROM trip_plans") as cur:
            assert (await cur.fetchone()) == (0,)  # a plan is kept only once it went out

        r = await c.post("/catalog", data={"csrf": csrf, "source": "packaged"}, headers={"Accept": "application/json"})
        assert r.status == 503 and (await r.json())["error"]["code"] == "broker_down"
        async with store.db.execute("SELECT COUNT(*) FROM catalog_versions") as cur:
            assert (await cur.fetchone()) == (0,)  # never lists a version the vans cannot get
        async with store.db.execute("SELECT COUNT(*) FROM down_seq") as cur:
            assert (await cur.fetchone()) == (0,)

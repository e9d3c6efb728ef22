"""Citizens pre-registered at HQ reach the van sealed (downlink ``prereg``) and come first in the queue."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import uuid
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import unquote

import pytest
from aiohttp.test_utils import TestClient, TestServer

from edge.app import create_app
from edge.prereg import prereg_context
from provisioning.keys import HQKeys, NodeBundle
from sync.crypto import wrap_to_public
from sync.downlink import build
from tests.conftest import ADMIN_PASSWORD, Broker
from tests.functional.test_hq_commands import publish
from tests.unit.test_node_api import node_config

pytestmark = pytest.mark.functional


def prereg_item(hq_keys: HQKeys, name: str, slot: str, date: str) -> dict[str, object]:
    pid = uuid.uuid4().hex
    details = {"name": name, "phone": "+380671234567", "purpose": "реєстрація місця проживання"}
    sealed = wrap_to_public(json.dumps(details, ensure_ascii=False).encode(), hq_keys.node_seal_keys()["van-01"], prereg_context("van-01", pid))
    return {"id": pid, "kind": "prereg", "date": date, "slot": slot, "service_code": "RES-01", "sealed": sealed.hex()}


async def test_preregistered_citizen_is_listed_and_called_first(hq_keys: HQKeys, bundle: NodeBundle, mosquitto: Broker, tmp_path: Path) -> None:
    cfg = node_config(bundle, tmp_path / "node")
    cfg.broker = mosquitto.url
    cfg.node_seal_wrapped = bundle.node_seal_wrapped
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    items = [prereg_item(hq_keys, "Гнатюк Ганна", "10:30", today), prereg_item(hq_keys, "Інший День", "09:00", "2020-01-01")]
    db_file = tmp_path / "node" / "node.db"
    async with TestClient(TestServer(create_app(cfg))) as c:
        async def received() -> int:
            return int(sqlite3.connect(db_file).execute("SELECT COUNT(*) FROM preregistrations").fetchone()[0])

        # Delivered over the real broker, signed by HQ, while the store is still locked.
        loop = asyncio.get_running_loop()
        for attempt in range(150):
            if attempt % 25 == 0:  # the node may not be subscribed yet: HQ would resend too
                await loop.run_in_executor(None, publish, mosquitto, "mo/v1/van-01/down/prereg",
                                           build(hq_keys.sign, "van-01", "prereg", 1, items, 1))
            if await received() == 2:
                break
            await asyncio.sleep(0.2)
        assert await received() == 2
        for f in tmp_path.joinpath("node").glob("node.db*"):
            assert "Гнатюк".encode() not in f.read_bytes()

        pre = re.search(r'name="csrf" value="([^"]+)"', await (await c.get("/login")).text())
        assert pre  # the login form's pre-session token (edge/hardening.py)
        r = await c.post("/login", data={"csrf": pre.group(1), "username": "admin", "password": ADMIN_PASSWORD}, allow_redirects=False)
        assert r.status == 303
        html = await (await c.get("/")).text()
        assert "Гнатюк Ганна" in html and "10:30" in html and "Інший День" not in html  # today's only
        csrf = re.search(r'name="csrf" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
        # A walk-in came earlier; the pre-registered citizen arrives later and is still called first.
        r = await c.post("/queue/issue", data={"csrf": csrf}, allow_redirects=False)
        assert unquote(r.headers["Location"]) == "/?issued=А-001"
        r = await c.post(f"/prereg/{items[0]['id']}/arrived", data={"csrf": csrf}, allow_redirects=False)
        assert unquote(r.headers["Location"]) == "/?issued=П-002"
        r = await c.post(f"/prereg/{items[0]['id']}/arrived", data={"csrf": csrf}, allow_redirects=False)
        assert unquote(r.headers["Location"]) == "/?issued=П-002"  # pressed twice: the same ticket
        r = await c.post(f"/prereg/{items[1]['id']}/arrived", data={"csrf": csrf})
        assert r.status == 404  # not today's
        await c.post("/queue/call", data={"csrf": csrf})
        html = await (await c.get("/")).text()
        row = re.search(r'id="ticket-П-002".*?</tr>', html, re.S)
        assert row and "викликано" in row.group(0)
    db = sqlite3.connect(db_file)
    events = [json.loads(p) for (p,) in db.execute("SELECT payload FROM outbox WHERE stream = 'evt'")]
    assert any(e.get("type") == "prereg" and e["event"] == "arrived" and e["ticket"] == "П-002" for e in events)
    assert ("prereg", items[0]["id"], "applied") in db.execute("SELECT kind, id, result FROM downlink_applied").fetchall()

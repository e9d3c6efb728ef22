"""The intake page and the intake API are one service: the same inputs are refused with the same field errors, or saved the same."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from edge.app import create_app
from edge.appkeys import STORE
from provisioning.keys import NodeBundle
from tests.conftest import ADMIN_PASSWORD
from tests.unit.test_node_api import node_config

GOOD = {"surname": "Шевченко", "given_name": "Тарас", "rnokpp": "1759013776", "service_code": "RES-01"}
BAD: list[tuple[str, dict[str, str], set[str]]] = [
    ("notes over the limit", {"notes": "н" * 2001}, {"notes"}),
    ("unknown applicant card", {"applicant_id": "0" * 32}, {"applicant_id"}),
    ("malformed applicant card", {"applicant_id": "../etc"}, {"applicant_id"}),
    ("bad РНОКПП and too long notes at once", {"rnokpp": "1234567890", "notes": "x" * 2001}, {"rnokpp", "notes"}),
    ("unknown service", {"service_code": "NOPE-1"}, {"service_code"}),
]


@pytest.fixture
async def client(bundle: NodeBundle, tmp_path: Path) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(create_app(node_config(bundle, tmp_path / "node")))) as c:
        r = await c.post("/api/v1/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        assert r.status == 200
        yield c


async def _page(c: TestClient, fields: dict[str, str]) -> tuple[int, str]:
    m = re.search(r'name="csrf" value="([^"]+)"', await (await c.get("/applications/new")).text())
    assert m
    r = await c.post("/applications", data={"csrf": m.group(1), "consent": "on", **fields}, allow_redirects=False)
    return r.status, await r.text()


def _page_errors(text: str) -> dict[str, str]:
    """The field errors the page shows, by field (the API's ``fields``)."""
    out = {m.group(1): html.unescape(m.group(2)) for m in re.finditer(r'<p class="field-error" id="([a-z_]+)-error"[^>]*>([^<]*)</p>', text)}
    if "applicant_id" in out:  # shown with its label: the card is a hidden field
        out["applicant_id"] = out["applicant_id"].split(": ", 1)[1]
    return out


async def _count(c: TestClient) -> int:
    async with c.server.app[STORE].db.execute("SELECT COUNT(*) FROM applications") as cur:
        row: Any = await cur.fetchone()
    return int(row[0])


@pytest.mark.parametrize("case", BAD, ids=[b[0] for b in BAD])
async def test_page_and_api_refuse_the_same_with_the_same_errors(client: TestClient, case: tuple[str, dict[str, str], set[str]]) -> None:
    _name, change, fields = case
    body = {**GOOD, **change}
    r = await client.post("/api/v1/applications", json=body)
    assert r.status == 422
    api = (await r.json())["error"]["fields"]
    status, text = await _page(client, body)
    assert status == 422
    assert set(api) == fields and _page_errors(text) == api
    assert await _count(client) == 0  # nothing stored by either
    if "notes" in change:  # refused, not cut: the page keeps every character typed, to shorten
        assert f">{change['notes']}</textarea>" in text


async def test_page_and_api_save_the_same(client: TestClient) -> None:
    # A browser sends each line break of a textarea as CR LF: 2000 characters typed are 2000 characters saved.
    typed = ("а" * 9 + "\r\n") * 200  # 2000 characters with single line breaks, 2200 as sent
    r = await client.post("/api/v1/applications", json={**GOOD, "notes": typed})
    assert r.status == 201, await r.text()
    status, _text = await _page(client, {**GOOD, "notes": typed})
    assert status == 303
    store = client.server.app[STORE]
    async with store.db.execute("SELECT id FROM applications ORDER BY number") as cur:
        ids = [row[0] for row in await cur.fetchall()]
    saved = [(await store.read_application(i, "admin"))["notes"] for i in ids]
    assert len(saved) == 2 and saved[0] == saved[1] == typed.replace("\r\n", "\n").strip()

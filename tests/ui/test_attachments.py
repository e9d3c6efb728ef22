"""Photos and scans of documents: uploaded through the page, sealed on the van, opened at HQ.

Node and HQ run in-process against a real Mosquitto; the node's SQLite file
and WAL are scanned for the image's bytes and its file name.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from edge.app import create_app as create_node
from edge.appkeys import ATTACHMENTS, STORE as NODE_STORE
from edge.attachments import MAX_FILE_BYTES, Upload, check_upload, seal_upload, AttachmentError
from hq import attachments as hq_att
from hq import users
from hq.app import STORE as HQ_STORE
from hq.app import create_app as create_hq
from mobile_office.nodecli import hq_config
from provisioning.keys import HQKeys, NodeBundle
from sync import crypto
from sync.blob import open_chunks
from sync.errors import CryptoError
from tests.conftest import ADMIN_PASSWORD, Broker
from tests.unit.test_node_api import node_config

pytestmark = pytest.mark.functional

TRAVERSAL_NAME = "../../../../tmp/Шевченко_паспорт.jpg"


def fake_photo(size: int = 300_000, seed: int = 3) -> bytes:
    """A JPEG-looking file (the type is decided from the first bytes) with incompressible content."""
    rnd = random.Random(seed)
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(rnd.getrandbits(8) for _ in range(size))


FAKE_PDF = b"%PDF-1.4\n% a scanned page\n" + b"0123456789abcdef" * 500 + b"\n%%EOF\n"


async def login_form(client: TestClient, username: str = "admin", password: str = ADMIN_PASSWORD) -> str:
    pre = re.search(r'name="csrf" value="([^"]+)"', await (await client.get("/login")).text())
    assert pre  # the login form's pre-session token (edge/hardening.py)
    r = await client.post("/login", data={"csrf": pre.group(1), "username": username, "password": password}, allow_redirects=False)
    assert r.status == 303, await r.text()
    html = await (await client.get("/applications/new")).text()
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m
    return m.group(1)


def intake_form(csrf: str, files: list[tuple[str, bytes, str]], notes: str = "") -> aiohttp.FormData:
    form = aiohttp.FormData()
    for k, v in {"csrf": csrf, "surname": "Шевченко", "given_name": "Тарас", "rnokpp": "1759013776", "service_code": "RES-01",
                 "consent": "on", "notes": notes}.items():
        form.add_field(k, v)
    for name, data, ctype in files:
        form.add_field("attachment", data, filename=name, content_type=ctype)
    return form


@pytest.fixture
async def both(hq_keys: HQKeys, bundle: NodeBundle, mosquitto: Broker, tmp_path: Path) -> AsyncIterator[tuple[TestClient, TestClient]]:
    assert hq_keys.directory == tmp_path / "hq"
    hq_app = create_hq(hq_config(None, {"hq_data_dir": str(hq_keys.directory), "hq_broker": mosquitto.url}))
    cfg = node_config(bundle, tmp_path / "node")
    cfg.broker = mosquitto.url
    async with TestClient(TestServer(hq_app)) as hq, TestClient(TestServer(create_node(cfg))) as node:
        yield node, hq


async def until(pred: Any, what: str, timeout: float = 60.0) -> Any:
    """Poll a condition (no timing is asserted: the timeout only bounds a hung test)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        v = await pred()
        if v:
            return v
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def test_photo_from_the_page_reaches_hq_byte_for_byte(both: tuple[TestClient, TestClient], tmp_path: Path) -> None:
    node, hq = both
    csrf = await login_form(node)
    photo = fake_photo()
    r = await node.post("/applications", data=intake_form(csrf, [(TRAVERSAL_NAME, photo, "image/jpeg")], notes="Оригінал паспорта звірено"),
                        allow_redirects=False)
    assert r.status == 303, await r.text()
    receipt_url = r.headers["Location"]
    app_id = receipt_url.split("/")[2]
    html = await (await node.get(receipt_url)).text()
    assert "Оригінал паспорта звірено" in html  # notes: sealed, shown on the receipt
    assert 'id="attachments"' in html and "JPEG" in html
    assert "Шевченко_паспорт" not in html  # the name stays sealed even on the page

    # A PDF scan added afterwards on the receipt page; a text file pretending to be a photo is refused.
    form = aiohttp.FormData()
    form.add_field("csrf", csrf)
    form.add_field("attachment", FAKE_PDF, filename="scan.pdf", content_type="application/pdf")
    r = await node.post(f"/applications/{app_id}/attachments", data=form, allow_redirects=False)
    assert r.status == 303 and r.headers["Location"].endswith("?attached=1")
    bad = aiohttp.FormData()
    bad.add_field("csrf", csrf)
    bad.add_field("attachment", b"just some text, not a picture", filename="photo.jpg", content_type="image/jpeg")
    r = await node.post(f"/applications/{app_id}/attachments", data=bad)
    page = await r.text()
    assert "не є фото" in page and page.count("<li>") >= 2

    # The van itself can show the photo to the administrator (an audited read).
    atts = await node.app[ATTACHMENTS].list(app_id)
    assert [a.content_type for a in atts] == ["image/jpeg", "application/pdf"]
    r = await node.get(f"/applications/{app_id}/attachments/{atts[0].id}")
    assert r.status == 200 and await r.read() == photo
    assert r.headers["Content-Disposition"] == "inline; filename*=UTF-8''" + quote("Шевченко_паспорт.jpg")

    # HQ receives every chunk exactly once, then the outbox is empty.
    hq_store = hq.app[HQ_STORE]

    async def complete() -> list[dict[str, Any]] | None:
        got = await hq_att.list_for_record(hq_store, app_id)
        return got if len(got) == 2 and all(a["complete"] for a in got) else None

    listed = await until(complete, "both attachments at HQ")
    assert {a["content_type"] for a in listed} == {"image/jpeg", "application/pdf"}
    async with hq_store.db.execute("SELECT COUNT(*) FROM items WHERE stream = 'blob'") as cur:
        row = await cur.fetchone()
    assert row is not None and row[0] == sum(a["chunks"] for a in listed)
    assert listed[0]["chunks"] > 1  # a 300 kB photo travels in several chunks

    # A records officer opens it in the vault: the original bytes and a harmless name; the opening is audited.
    await users.add_user(hq_store.db, "olena.k", "records_officer", "довгий-пароль-1", 0.0)
    await users.add_user(hq_store.db, "viewer.v", "viewer", "довгий-пароль-2", 0.0)
    jpeg_id = next(a["id"] for a in listed if a["content_type"] == "image/jpeg")
    for user, pw, expect in (("viewer.v", "довгий-пароль-2", 403), ("olena.k", "довгий-пароль-1", 200)):
        hq.session.cookie_jar.clear()
        pre = re.search(r'name="csrf" value="([^"]+)"', await (await hq.get("/login")).text())
        assert pre  # HQ's login form carries a pre-session token too (kit/hardening.py)
        r = await hq.post("/login", data={"csrf": pre.group(1), "username": user, "password": pw}, allow_redirects=False)
        assert r.status == 303
        page = await (await hq.get(f"/records/{app_id}/attachments")).text()
        assert page.count("отримано повністю") == 2
        assert (f'action="/records/{app_id}/attachments/{jpeg_id}"' in page) == (expect == 200)  # the form only for who may open
        m = re.search(r'name="csrf" value="([^"]+)"', page)
        assert m
        r = await hq.post(f"/records/{app_id}/attachments/{jpeg_id}", data={"csrf": m.group(1), "reason": "перевірка документів"})
        assert r.status == expect, await r.text()
    assert await r.read() == photo
    disposition = r.headers["Content-Disposition"]
    assert disposition == "attachment; filename*=UTF-8''" + quote("Шевченко_паспорт.jpg")  # the path is gone
    async with hq_store.db.execute("SELECT username, reason FROM vault_audit WHERE record_id = ?", (jpeg_id,)) as cur:
        assert await cur.fetchall() == [("olena.k", "attachment: перевірка документів")]

    async def drained() -> bool:
        return (await node.app[NODE_STORE].outbox_summary())["by_stream"]["blob"]["pending"] == 0

    await until(drained, "the blob stream acked")

    # Nothing readable on the van's disk: not the image, not the name, not the notes; no file outside the database.
    assert not Path("/tmp/Шевченко_паспорт.jpg").exists()
    disk = b"".join(f.read_bytes() for f in (tmp_path / "node").glob("node.db*"))
    for off in range(16, len(photo) - 32, 4096):
        assert photo[off:off + 32] not in disk
    assert "Шевченко_паспорт".encode() not in disk and "Оригінал паспорта".encode() not in disk
    assert b"a scanned page" not in disk


async def test_too_big_or_wrong_type_is_refused_with_the_form_kept(both: tuple[TestClient, TestClient], tmp_path: Path) -> None:
    node, _ = both
    csrf = await login_form(node)
    big = b"\xff\xd8\xff" + os.urandom(MAX_FILE_BYTES)
    r = await node.post("/applications", data=intake_form(csrf, [("big.jpg", big, "image/jpeg")]))
    assert r.status == 422
    html = await r.text()
    assert "завеликий" in html and 'value="Шевченко"' in html and "оберіть їх ще раз" in html
    db = sqlite3.connect(tmp_path / "node" / "node.db")
    assert db.execute("SELECT COUNT(*) FROM applications").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM attachments").fetchone()[0] == 0
    r = await node.post("/applications", data=intake_form(csrf, [("x.exe", b"MZ\x90\x00 not a picture", "image/jpeg")]))
    assert r.status == 422 and "не є фото" in await r.text()


def test_chunks_cannot_be_swapped_dropped_or_moved(bundle: NodeBundle, hq_keys: HQKeys) -> None:
    node_key = crypto.random_key()
    up = check_upload("a.png", b"\x89PNG\r\n\x1a\n" + os.urandom(150_000))
    p = seal_upload("a" * 32, up, bundle.hq_seal_public, node_key)
    dk = crypto.unwrap_with_private(p.wrap_hq, hq_keys.seal, crypto.record_aad("attachments", "a" * 32, 1))
    assert open_chunks("a" * 32, 1, dk, p.chunks, p.meta) == ("a.png", up.data)
    for broken in (p.chunks[::-1], p.chunks[:-1], p.chunks + p.chunks[-1:]):
        with pytest.raises(CryptoError):
            open_chunks("a" * 32, 1, dk, broken, p.meta)
    with pytest.raises(CryptoError):  # the same chunks under another attachment's id
        open_chunks("b" * 32, 1, dk, p.chunks, p.meta)


def test_type_comes_from_the_bytes_and_names_are_only_names() -> None:
    assert check_upload("x.pdf", b"\xff\xd8\xff\xe0rest").content_type == "image/jpeg"
    assert check_upload("../../x", b"%PDF-1.7 ...").name == "x"
    assert check_upload("C:\\Users\\a\\..\\scan\x00.pdf", b"%PDF-1.7").name == "scan.pdf"
    assert check_upload("...", b"%PDF-1.7").name == "document"
    for data in (b"", b"GIF89a....", b"<svg xmlns='http://www.w3.org/2000/svg'/>"):
        with pytest.raises(AttachmentError):
            check_upload("f.jpg", data)
    assert isinstance(Upload("a", "image/png", b""), Upload)

"""Issue 18 item 9: the заява filled from the card and the intake, its inventory, the signature from the tablet."""

from __future__ import annotations

import io
import sqlite3
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pypdf import PdfReader

from edge.app import create_app
from edge.app_status import APP_STATUS
from provisioning.keys import NodeBundle
from sync import outbox
from tests.conftest import ADMIN_PASSWORD
from tests.unit.test_node_api import node_config

RES01_DOCS = ["Паспорт громадянина України або ID-картка", "Документ, що підтверджує право на проживання в житлі",
              "Квитанція про сплату адміністративного збору"]


def png(width: int = 60, height: int = 20) -> bytes:
    """A small real PNG (a black stroke on white), made without an image library."""
    rows = b"".join(b"\x00" + bytes(0 if y == height // 2 else 255 for _x in range(width)) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.fixture
async def client(bundle: NodeBundle, tmp_path: Path) -> AsyncIterator[TestClient]:
    app = create_app(node_config(bundle, tmp_path / "node"))
    async with TestClient(TestServer(app)) as c:
        yield c


async def login(client: TestClient) -> str:
    r = await client.post("/api/v1/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status == 200
    return str((await r.json())["csrf"])


async def card(client: TestClient) -> str:
    r = await client.post("/api/v1/applicants", json={
        "surname": "Косач", "given_name": "Лариса", "patronymic": "Петрівна", "rnokpp": "3184710691", "birth_date": "1987-03-12",
        "address": "м. Кривий Ріг, вул. Тестова, 1", "phone": "0671234567", "document_type": "id_card", "document_number": "123456789"})
    assert r.status == 201, await r.text()
    return str((await r.json())["id"])


def pdf_text(data: bytes) -> str:
    return " ".join(" ".join(p.extract_text() for p in PdfReader(io.BytesIO(data)).pages).split())


async def test_printed_application_has_the_applicant_and_the_documents_received(client: TestClient, tmp_path: Path) -> None:
    await login(client)
    applicant = await card(client)
    r = await client.post("/api/v1/applications", json={
        "surname": "Косач", "given_name": "Лариса", "rnokpp": "3184710691", "service_code": "RES-01", "applicant_id": applicant,
        "documents_received": [RES01_DOCS[2], RES01_DOCS[0]]})
    assert r.status == 201, await r.text()
    saved = await r.json()
    r = await client.get(f"/applications/{saved['id']}/application.pdf")
    assert r.status == 200 and r.content_type == "application/pdf"
    text = pdf_text(await r.read())
    assert "ЗАЯВА" in text and saved["number"] in text
    assert "Я, Косач Лариса Петрівна, дата народження 12.03.1987, РНОКПП 3184710691, документ, що посвідчує особу: ID-картка 123456789" in text
    assert "прошу зареєструвати моє місце проживання за адресою: м. Кривий Ріг, вул. Тестова, 1" in text
    assert "Центр надання адміністративних послуг «Віза»" in text  # the addressee from the catalogue's template
    # the inventory: what was ticked, in the catalogue's order, and nothing else
    assert f"Опис документів, що отримані від заявника 1. {RES01_DOCS[0]} 2. {RES01_DOCS[2]}" in text
    assert RES01_DOCS[1] not in text
    page = await (await client.get(f"/applications/{saved['id']}/application")).text()
    assert 'id="form-inventory"><li>' in page and "Косач Лариса Петрівна" in page
    # sealed with the record: the node's database never holds the inventory or the address in clear
    raw = b"".join(p.read_bytes() for p in (tmp_path / "node").glob("node.db*"))
    assert RES01_DOCS[2].encode() not in raw and "Тестова".encode() not in raw


async def test_a_document_the_service_does_not_list_is_refused(client: TestClient) -> None:
    await login(client)
    r = await client.post("/api/v1/applications", json={"surname": "Косач", "given_name": "Лариса", "rnokpp": "3184710691",
                                                        "service_code": "RES-01", "documents_received": ["Свідоцтво про шлюб"]})
    assert r.status == 422
    assert set((await r.json())["error"]["fields"]) == {"documents_received"}


async def test_form_without_a_card_or_inventory_leaves_blanks(client: TestClient) -> None:
    await login(client)
    r = await client.post("/api/v1/applications", json={"surname": "Косач", "given_name": "Лариса", "rnokpp": "3184710691", "service_code": "SOC-01"})
    saved = await r.json()
    text = pdf_text(await (await client.get(f"/applications/{saved['id']}/application.pdf")).read())
    assert "прошу призначити житлову субсидію" in text and "дата народження ____" in text
    assert "опис не складено під час прийому" in text


async def test_page_form_ticks_become_the_inventory(client: TestClient) -> None:
    csrf = await login(client)
    form = aiohttp.FormData()
    for k, v in {"csrf": csrf, "surname": "Косач", "given_name": "Лариса", "rnokpp": "3184710691", "service_code": "RES-01",
                 "consent": "on", "doc_received_1": RES01_DOCS[1]}.items():
        form.add_field(k, v)
    r = await client.post("/applications", data=form, allow_redirects=False)
    assert r.status == 303, await r.text()
    app_id = r.headers["Location"].split("/")[2]
    page = await (await client.get(f"/applications/{app_id}/application")).text()
    assert f'id="form-inventory"><li>{RES01_DOCS[1]}</li></ol>' in page


async def test_signature_from_the_tablet_is_sealed_and_printed(client: TestClient, tmp_path: Path) -> None:
    csrf = await login(client)
    r = await client.post("/api/v1/applications", json={"surname": "Косач", "given_name": "Лариса", "rnokpp": "3184710691", "service_code": "RES-01"})
    app_id = (await r.json())["id"]
    before = await (await client.get(f"/applications/{app_id}/application.pdf")).read()
    assert not PdfReader(io.BytesIO(before)).pages[0].images
    form = aiohttp.FormData()
    form.add_field("csrf", csrf)
    form.add_field("signature", png(), filename="signature.png", content_type="image/png")
    r = await client.post(f"/applications/{app_id}/signature", data=form, allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == f"/applications/{app_id}/application?signed=1"
    page = await (await client.get(f"/applications/{app_id}/application?signed=1")).text()
    assert 'id="form-signed"' in page and 'id="signature-saved"' in page
    after = await (await client.get(f"/applications/{app_id}/application.pdf")).read()
    assert len(PdfReader(io.BytesIO(after)).pages[0].images) == 1
    with sqlite3.connect(tmp_path / "node" / "node.db") as db:
        assert db.execute("SELECT COUNT(*) FROM attachments WHERE application_id = ? AND content_type = 'image/png'", (app_id,)).fetchone()[0] == 1
    raw = b"".join(p.read_bytes() for p in (tmp_path / "node").glob("node.db*"))
    assert png() not in raw  # sealed like a photo
    # a signature must be one PNG
    bad = aiohttp.FormData()
    bad.add_field("csrf", csrf)
    bad.add_field("signature", b"%PDF-1.4 not a picture", filename="x.pdf", content_type="application/pdf")
    r = await client.post(f"/applications/{app_id}/signature", data=bad, allow_redirects=False)
    assert r.status == 422


async def test_handover_is_sealed_then_shredded_once_hq_holds_it(client: TestClient, tmp_path: Path) -> None:
    """The van's part of item 6 in-process: ready (as HQ's downlink leaves it) → handover sealed and queued → shredded after HQ's ack."""
    await login(client)
    r = await client.post("/api/v1/applications", json={"surname": "Косач", "given_name": "Лариса", "rnokpp": "3184710691", "service_code": "RES-01"})
    app_id = (await r.json())["id"]
    store = client.app[APP_STATUS].store  # type: ignore[index]
    await store.db.execute("INSERT INTO app_status(application_id, status, hlc, origin, edit_id, received) VALUES (?, 'ready', 1, 'hq', 'e', 0)", (app_id,))
    await store.db.commit()
    r = await client.post(f"/api/v1/applications/{app_id}/handover", json={"receiver": "Косач Петро", "receiver_document": "ID 987654321"})
    assert r.status == 201, await r.text()
    rows = await (await client.get("/api/v1/applications?status=ready")).json()
    assert rows["applications"] == []
    html = await (await client.get(f"/applications/{app_id}/receipt")).text()
    assert 'id="handed-over-to">Косач Петро (ID 987654321)' in html
    async with store.db.execute("SELECT payload FROM outbox WHERE stream = 'rec' ORDER BY seq DESC LIMIT 1") as cur:
        payload = bytes((await cur.fetchone())[0])
    assert b'"type":"handover"' in payload and "Косач Петро".encode() not in payload
    await outbox.apply_ack(store.db, "rec", 100, 0.0)
    async with store.db.execute("SELECT COUNT(*) FROM handovers WHERE wrap_node IS NOT NULL") as cur:
        assert (await cur.fetchone())[0] == 1
    assert await store.shred_expired(0) >= 2  # the application and its handover
    async with store.db.execute("SELECT COUNT(*), SUM(wrap_node IS NULL) FROM handovers") as cur:
        assert tuple(await cur.fetchone()) == (1, 1)  # the van's copy is gone; HQ holds it

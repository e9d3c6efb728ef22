"""Roles shape the van UI and are enforced on the server; the receipt PDF is a real, parseable PDF."""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from edge.app import create_app
from edge.catalog import Catalog
from provisioning.keys import AdminAccount, HQKeys, NodeBundle, add_node
from tests.unit.test_node_api import node_config

PW = {"olena": "пароль-олени-1", "ivan": "пароль-івана-1", "maria": "пароль-марії-1"}


@pytest.fixture
def staffed(hq_keys: HQKeys, tmp_path: Path) -> NodeBundle:
    return add_node(hq_keys, "van-02", tmp_path / "bundle2", [
        AdminAccount("olena", PW["olena"], "van_admin"), AdminAccount("ivan", PW["ivan"], "case_admin"),
        AdminAccount("maria", PW["maria"], "supervisor"),
    ])


@pytest.fixture
async def client(staffed: NodeBundle, tmp_path: Path) -> AsyncIterator[TestClient]:
    cfg = node_config(staffed, tmp_path / "node")
    cfg.node_seal_wrapped = staffed.node_seal_wrapped  # home visits open with the node's sealing key
    async with TestClient(TestServer(create_app(cfg))) as c:
        yield c


async def login(c: TestClient, user: str, password: str | None = None) -> str:
    """Log in through the form; returns where the node sends this role first."""
    c.session.cookie_jar.clear()
    token = await csrf(c, "/login")  # the login form's pre-session token (edge/hardening.py)
    r = await c.post("/login", data={"csrf": token, "username": user, "password": password or PW[user]}, allow_redirects=False)
    assert r.status == 303, await r.text()
    return r.headers["Location"]


async def csrf(c: TestClient, path: str = "/applications/new") -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', await (await c.get(path)).text())
    assert m
    return m.group(1)


async def submit(c: TestClient, notes: str = "", **extra: str) -> str:
    data = {"csrf": await csrf(c), "surname": "Шевченко", "given_name": "Тарас", "rnokpp": "1759013776", "service_code": "RES-01",
            "consent": "on", "notes": notes, **extra}
    r = await c.post("/applications", data=data, allow_redirects=False)
    assert r.status == 303, await r.text()
    return str(r.headers["Location"]).split("/")[2]


async def test_receipt_pdf_parses_and_names_number_and_services(client: TestClient) -> None:
    from pypdf import PdfReader

    await login(client, "olena")
    app_id = await submit(client, notes="Довідку про склад сім'ї донесе завтра")
    html = await (await client.get(f"/applications/{app_id}/receipt")).text()
    number = re.search(r'id="application-number">([^<]+)<', html).group(1)  # type: ignore[union-attr]
    assert f'href="/applications/{app_id}/receipt.pdf"' in html
    r = await client.get(f"/applications/{app_id}/receipt.pdf")
    assert r.status == 200 and r.content_type == "application/pdf"
    pdf = PdfReader(io.BytesIO(await r.read()))
    assert len(pdf.pages) == 1
    text = " ".join((p.extract_text() or "") for p in pdf.pages)
    flat = re.sub(r"\s+", " ", text)
    service = Catalog.load().services["RES-01"]
    assert number in flat
    assert "RES-01" in flat and service.name.split()[0] in flat
    assert "Розписка про прийняття заяви" in flat and "Довідку про склад" in flat
    assert any(d.split()[0] in flat for d in service.documents)
    # A package receipt lists every application number of the package.
    r = await client.post("/applications", data={"csrf": await csrf(client), "surname": "Українка", "given_name": "Леся",
                                                  "rnokpp": "3184710691", "package_code": "PKG-BIRTH", "consent": "on"},
                          allow_redirects=False)
    pkg_id = r.headers["Location"].split("/")[2]
    text = " ".join((p.extract_text() or "") for p in PdfReader(io.BytesIO(await (await client.get(f"/applications/{pkg_id}/receipt.pdf")).read())).pages)
    assert len(set(re.findall(r"VAN-02-\d{8}-\d{4}", text))) == len(Catalog.load().packages["PKG-BIRTH"].services)


async def test_unknown_or_foreign_ids_give_404_not_500(client: TestClient) -> None:
    await login(client, "olena")
    for path in ("/applications/" + "0" * 32 + "/receipt.pdf", "/applications/../receipt.pdf", "/applications/" + "0" * 32 + "/attachments/" + "1" * 32):
        r = await client.get(path)
        assert r.status == 404, path


async def test_roles_are_enforced_on_the_server(client: TestClient) -> None:
    # A van administrator: the queue first, no report, no account management (links hidden AND refused).
    assert await login(client, "olena") == "/"
    home = await (await client.get("/")).text()
    assert 'id="nav-report"' not in home and 'id="nav-admins"' not in home
    await submit(client)
    token = await csrf(client)
    assert (await client.get("/report")).status == 403
    assert (await client.get("/admins")).status == 403
    r = await client.post("/admins", data={"csrf": token, "username": "evil", "password": "x" * 12, "role": "supervisor"})
    assert r.status == 403 and "Ваша роль не дає доступу" in await r.text()
    r = await client.post("/admins/maria/remove", data={"csrf": token})
    assert r.status == 403

    # A case administrator lands on the home visits.
    assert await login(client, "ivan") == "/visits"
    r = await client.get("/visits")
    page = await r.text()
    assert r.status == 200, page
    assert page.index('<a href="/visits">') < page.index('<a href="/">')
    assert (await client.get("/report")).status == 403

    # The supervisor sees the day's work and manages accounts.
    assert await login(client, "maria") == "/"
    report = await (await client.get("/report")).text()
    assert re.search(r'id="report-applications">1<', report) and "olena" in report and "RES-01" in report
    token = await csrf(client, "/admins")
    r = await client.post("/admins", data={"csrf": token, "username": "petro", "password": "short", "role": "case_admin"})
    assert r.status == 422 and "не коротшим" in await r.text()
    r = await client.post("/admins", data={"csrf": token, "username": "petro", "password": "пароль-петра-1", "role": "case_admin"},
                          allow_redirects=False)
    assert r.status == 303
    assert "admin-petro" in await (await client.get("/admins")).text()
    r = await client.post("/admins/maria/remove", data={"csrf": token})
    assert r.status == 409  # not oneself
    assert await login(client, "petro", "пароль-петра-1") == "/visits"  # the new keyslot opens the store

    await login(client, "maria")
    token = await csrf(client, "/admins")
    r = await client.post("/admins/petro/remove", data={"csrf": token}, allow_redirects=False)
    assert r.status == 303
    client.session.cookie_jar.clear()
    token = await csrf(client, "/login")
    r = await client.post("/login", data={"csrf": token, "username": "petro", "password": "пароль-петра-1"}, allow_redirects=False)
    assert r.status == 401  # the slot is gone


async def test_json_api_takes_sealed_notes(client: TestClient) -> None:
    r = await client.post("/api/v1/login", json={"username": "olena", "password": PW["olena"]})
    assert r.status == 200
    r = await client.post("/api/v1/applications", json={"surname": "Шевченко", "given_name": "Тарас", "rnokpp": "1759013776",
                                                         "service_code": "RES-01", "notes": "x" * 2001})
    assert r.status == 422 and "notes" in (await r.json())["error"]["fields"]
    r = await client.post("/api/v1/applications", json={"surname": "Шевченко", "given_name": "Тарас", "rnokpp": "1759013776",
                                                         "service_code": "RES-01", "notes": "Принесе довідку завтра"})
    assert r.status == 201
    html = await (await client.get(f"/applications/{(await r.json())['id']}/receipt")).text()
    assert "Принесе довідку завтра" in html

"""HQ's vault in the browser (the demo's van and HQ): search by identifier, the whole record, an export read back,
the English pages and the retention report; axe on each page."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, Proc, free_port, http_ok, mobile_office_cmd, spawn, wait_until
from tests.helpers import ApiClient, hq_token
from tests.ui.conftest import axe_violations, browser, login, screenshot  # noqa: F401  (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.functional]

PASSWORD = "Пароль-для-тесту-1"
RNOKPP, UNZR = "3184710691", "19900101-01233"


@pytest.fixture
def demo(tmp_path: Path, procs: list[Proc]) -> Iterator[tuple[str, str, Path]]:
    node_port, hq_port = free_port(), free_port()
    data = tmp_path / "demo"
    p = spawn(mobile_office_cmd("demo", "--data-dir", str(data), "--http-port", str(node_port), "--hq-port", str(hq_port), "--admin-password", PASSWORD),
              tmp_path / "demo.log")
    procs.append(p)
    wait_until(lambda: http_ok(f"http://127.0.0.1:{node_port}/healthz") and http_ok(f"http://127.0.0.1:{hq_port}/healthz"), 60, what="demo")
    yield f"http://127.0.0.1:{node_port}", f"http://127.0.0.1:{hq_port}", data
    p.terminate()


def hq_records(hq: str, token: str) -> int:
    return int(ApiClient(hq, token).get("/api/v1/stats")["records"])


def test_vault_search_open_export_in_two_languages(browser: Any, demo: tuple[str, str, Path]) -> None:  # noqa: F811
    van, hq, data = demo
    api = ApiClient(van)
    api.login("admin", PASSWORD)
    status, card = api.request("POST", "/api/v1/applicants", {
        "surname": "Косач", "given_name": "Лариса", "rnokpp": RNOKPP, "unzr": UNZR, "birth_date": "1990-01-01", "phone": "+380671234567",
        "address": "м. Київ, вул. Тестова, 1", "categories": ["age80"]})
    assert status == 201, card
    status, saved = api.request("POST", "/api/v1/applications", {"surname": "Косач", "given_name": "Лариса", "rnokpp": RNOKPP,
                                                                 "service_code": "RES-01", "applicant_id": card["id"],
                                                                 "notes": "потрібен пандус"})
    assert status == 201, saved
    status, other = api.request("POST", "/api/v1/applications", {"surname": "Франко", "given_name": "Іван", "rnokpp": "2245134672",
                                                                 "service_code": "RES-01"})
    assert status == 201, other
    demo_token = (data / "demo-hq-token.txt").read_text().strip()
    wait_until(lambda: hq_records(hq, demo_token) == 2, 60, what="both records at HQ")

    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = ctx.new_page()
    login(page, hq, "hq-admin", PASSWORD)
    page.goto(hq + "/records")
    assert page.locator("#records tbody tr").count() == 2
    assert axe_violations(page) == []
    page.fill("#f-identifier", UNZR)
    page.click("#search")
    assert page.locator("#records tbody tr").count() == 1 and saved["number"] in page.inner_text("#records")
    assert UNZR not in page.url  # the identifier went in the body, never the address
    screenshot(page, "hq-records-search", docs=True)
    page.fill("#records input[name=reason]", "звернення громадянки щодо статусу")
    page.click("#records button[type=submit]")
    assert page.inner_text("#applicant") == "Косач Лариса"
    card_text = page.inner_text("#applicant-card")
    for shown in (RNOKPP, UNZR, "+380671234567", "м. Київ, вул. Тестова, 1", "80+ років", "Телефон", "Адреса"):
        assert shown in card_text, shown
    assert "потрібен пандус" in page.inner_text("#application-fields")
    assert page.inner_text("#delivery").count(".") >= 6  # taken at the van, received, acknowledged: all with dates
    assert "hq-admin: звернення громадянки щодо статусу" in page.inner_text("#openings")
    assert axe_violations(page) == []
    screenshot(page, "hq-vault-record", docs=True)

    # The same record in English.
    page.click("#lang-switch")
    page.wait_for_load_state()
    assert page.evaluate("document.documentElement.lang") == "en"
    page.goto(hq + "/records")
    assert "Applications received from the vans" in page.inner_text("h1") and "Open" in page.inner_text("#records")
    page.fill(f"#reason-{saved['id']}", "citizen's request")
    page.click(f"form[action='/records/{saved['id']}'] button")
    assert "Applicant card" in page.inner_text("main") and "aged 80+" in page.inner_text("#applicant-card")
    assert "Phone" in page.inner_text("#applicant-card")
    assert axe_violations(page) == []
    screenshot(page, "hq-record-en", docs=True)
    page.goto(hq + "/lang/uk?next=//evil.example/")
    assert page.url == hq + "/"  # the switch only returns to a path of this server

    # Export the filtered list (both records of van-01) as CSV; read it back.
    page.goto(hq + "/records")
    page.fill("#export-reason", "передача до бек-офісу")
    page.select_option("#export-format", "csv")
    with page.expect_download() as dl:
        page.click("#export")
    path = dl.value.path()
    rows = list(csv.DictReader(io.StringIO(Path(path).read_text(encoding="utf-8-sig"))))
    assert {r["number"] for r in rows} == {saved["number"], other["number"]} and {r["schema"] for r in rows} == {"mo.records.v1"}
    assert {r["applicant.unzr"] for r in rows} == {UNZR, ""}
    # A selection, as JSON.
    page.check(f"#sel-{other['id']}")
    page.fill("#export-reason", "вибрана заява")
    page.select_option("#export-format", "json")
    with page.expect_download() as dl:
        page.click("#export")
    doc = json.loads(Path(dl.value.path()).read_text(encoding="utf-8"))
    assert doc["schema"] == "mo.records.v1" and [r["number"] for r in doc["records"]] == [other["number"]]
    assert doc["records"][0]["application"]["rnokpp"] == "2245134672"

    # The machine endpoint, filtered by van and service (a session here; the importer's token below).
    r = page.request.get(hq + "/api/v1/records/export?reason=нічний%20імпорт&format=csv&node_id=van-01&service_code=RES-01")
    assert r.status == 200 and r.headers["content-type"].startswith("text/csv")
    assert {row["number"] for row in csv.DictReader(io.StringIO(r.body().decode("utf-8-sig")))} == {saved["number"], other["number"]}
    assert page.request.get(hq + "/api/v1/records/export?format=json").status == 422  # no reason
    assert page.request.get(hq + f"/api/v1/records/export?reason=x1x&identifier={RNOKPP}").status == 422  # never in a URL

    # The back office's importer: a machine token of the export-only role; a viewer's token may not, no token is 401.
    importer = ApiClient(hq, hq_token(data / "hq", role="back_office", name="importer"))
    status, doc = importer.request("GET", "/api/v1/records/export?reason=nightly%20import&format=json&node_id=van-01")
    assert status == 200 and doc["schema"] == "mo.records.v1" and doc["exported_by"] == "token:importer" and doc["count"] == 2
    assert {r["applicant"].get("unzr") for r in doc["records"]} == {UNZR, None}
    status, _ = ApiClient(hq, hq_token(data / "hq", role="viewer", name="monitor")).request("GET", "/api/v1/records/export?reason=x1x")
    assert status == 403
    assert ApiClient(hq).request("GET", "/api/v1/records/export?reason=x1x")[0] == 401
    assert importer.request("GET", "/api/v1/retention")[0] == 200
    loops = ApiClient(hq).get("/healthz")["loops"]  # both run supervised
    assert loops["hq-vault-index"]["state"] == "running" and loops["hq-retention"]["state"] == "running"

    # The retention report: nothing closed long enough yet.
    page.goto(hq + "/retention")
    assert "1826" in page.inner_text("#retention-rule") and page.locator("#retention tbody tr").count() == 1
    assert axe_violations(page) == []
    r = subprocess.run([sys.executable, "-m", "mobile_office.cli", "hq-retention", "--hq-data-dir", str(data / "hq")],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["total"] == 0

    # A viewer searches by metadata but not by identifier, and exports nothing.
    r = subprocess.run([sys.executable, "-m", "mobile_office.cli", "hq-user", "petro", "--role", "viewer", "--hq-data-dir", str(data / "hq"),
                        "--password", "Переглядач-1"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    viewer = browser.new_context().new_page()
    viewer.goto(hq + "/lang/en?next=/login")  # this one works in English, from the login page on
    assert viewer.inner_text("h1") == "HQ login" and viewer.evaluate("document.documentElement.lang") == "en"
    assert axe_violations(viewer) == []
    login(viewer, hq, "petro", "Переглядач-1")
    viewer.goto(hq + "/records")
    assert viewer.locator("#f-identifier").count() == 0 and viewer.locator("#export").count() == 0
    assert "no access" in viewer.inner_text("#records") and "Fleet" in viewer.inner_text("nav")
    csrf = viewer.evaluate("() => document.querySelector('input[name=csrf]').value")
    assert viewer.request.post(hq + "/records", form={"csrf": csrf, "identifier": RNOKPP}).status == 403
    assert viewer.request.post(hq + "/records/export", form={"csrf": csrf, "reason": "цікавість", "format": "json"}).status == 403

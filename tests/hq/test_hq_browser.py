"""HQ in the browser: the fleet, the vault with roles and an audited opening, a signed command."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, Proc, free_port, http_ok, mobile_office_cmd, spawn, wait_until
from tests.helpers import ApiClient
from tests.ui.conftest import axe_violations, browser, login, screenshot  # noqa: F401  (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.functional]

PASSWORD = "Пароль-для-тесту-1"


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


def test_hq_fleet_vault_and_roles(browser: Any, demo: tuple[str, str, Path]) -> None:  # noqa: F811
    van, hq, data = demo
    api = ApiClient(van)
    api.login("admin", PASSWORD)
    status, saved = api.request("POST", "/api/v1/applications", {"surname": "Косач", "given_name": "Лариса", "rnokpp": "3184710691", "service_code": "RES-01"})
    assert status == 201
    hq_api = ApiClient(hq, (data / "demo-hq-token.txt").read_text().strip())
    wait_until(lambda: hq_api.get("/api/v1/stats")["records"] == 1, 60, what="the record at HQ")
    wait_until(lambda: hq_api.get("/api/v1/fleet")[0]["lat"] is not None, 60, what="a position at HQ")

    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    page.goto(hq + "/")
    assert page.url.endswith("/login")
    login(page, hq, "hq-admin", PASSWORD)
    assert "van-01" in page.inner_text("#fleet")
    assert page.locator(".map svg circle").count() == 1
    assert axe_violations(page) == []
    screenshot(page, "hq-dashboard", docs=True)

    page.goto(hq + "/records")
    assert saved["number"] in page.inner_text("#records")
    assert "Косач" not in page.content()  # the list shows no personal data
    page.fill("input[name=reason]", "звернення громадянки щодо статусу")
    page.click("#records button[type=submit]")
    assert page.inner_text("#applicant") == "Косач Лариса"
    assert "hq-admin: звернення громадянки щодо статусу" in page.inner_text("#openings")
    screenshot(page, "hq-record", docs=True)

    # A viewer sees the fleet but cannot open records, even by posting the form directly.
    r = subprocess.run([sys.executable, "-m", "mobile_office.cli", "hq-user", "petro", "--role", "viewer", "--hq-data-dir", str(data / "hq"),
                        "--password", "Переглядач-1"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    viewer = browser.new_context().new_page()
    login(viewer, hq, "petro", "Переглядач-1")
    viewer.goto(hq + "/records")
    assert "немає доступу" in viewer.inner_text("#records") and viewer.locator("#records button").count() == 0
    csrf = viewer.evaluate("() => document.querySelector('input[name=csrf]').value")
    resp = viewer.request.post(hq + f"/records/{saved['id']}", form={"csrf": csrf, "reason": "цікавість"})
    assert resp.status == 403
    assert viewer.locator("#send-command").count() == 0

    # A home visit planned at HQ reaches the van, sealed to it.
    import sqlite3

    page.goto(hq + "/")
    page.fill("#v-name", "Гнатюк Ганна Петрівна")
    page.fill("#v-address", "вул. Тестова, 7")
    page.check("input[name=category][value=age80]")
    page.click("#assign-visit")
    wait_until(lambda: sqlite3.connect(data / "node" / "node.db").execute("SELECT COUNT(*) FROM visits").fetchone()[0] == 1, 60,
               what="the assignment at the van")

    # The admin sends a signed command; the van acts on it (lock).
    page.goto(hq + "/")
    page.select_option("#cmd-kind", "lock")
    page.click("#send-command")
    wait_until(lambda: api.get("/api/v1/status")["store"]["locked"] is True, 60, what="the van to lock on HQ's command")
    # The commands console shows the van's acknowledgement, as of the van's time.

    def console() -> str:
        page.goto(hq + "/")
        return str(page.inner_text("#sent-commands"))
    assert "lock" in console()
    wait_until(lambda: "виконано" in console(), 60, what="the van's ack in the commands console")
    ctx.close()

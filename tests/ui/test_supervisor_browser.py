"""The supervisor's screens in Debian's Chromium: the day report and the administrators' accounts, with axe checks."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from provisioning.keys import AdminAccount, HQKeys, add_node
from tests.conftest import Proc, free_port, http_ok, mobile_office_cmd, spawn, wait_until
from tests.ui.conftest import axe_violations, login, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.functional]

PW = "пароль-керівника-1"


def test_supervisor_report_and_accounts(browser: Any, hq_keys: HQKeys, tmp_path: Path, procs: list[Proc]) -> None:
    bundle = add_node(hq_keys, "van-01", tmp_path / "bundle", [AdminAccount("maria", PW, "supervisor"), AdminAccount("olena", PW, "van_admin")])
    port = free_port()
    # No broker reachable: the van works offline, records wait in the outbox.
    procs.append(spawn(mobile_office_cmd("node", "--bundle", str(bundle.directory), "--data-dir", str(tmp_path / "node"),
                                         "--broker", f"mqtt://127.0.0.1:{free_port()}", "--gpsd", f"127.0.0.1:{free_port()}",
                                         "--http-host", "127.0.0.1", "--http-port", str(port)), tmp_path / "node.log"))
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(base + "/healthz"), 30, what="node")
    ctx = browser.new_context(viewport={"width": 1024, "height": 768}, locale="uk-UA")
    page = ctx.new_page()
    login(page, base, "maria", PW)

    page.goto(base + "/applications/new")
    page.fill("#surname", "Шевченко")
    page.fill("#given_name", "Тарас")
    page.fill("#rnokpp", "1759013776")
    page.select_option("#service_code", "RES-01")
    page.fill("#notes", "Оригінали звірено")
    page.check("#consent")
    page.click("#submit-application")
    page.wait_for_url(re.compile(r".*/receipt\?saved=1$"))
    assert "Оригінали звірено" in page.inner_text("#application-notes")

    page.click("#nav-report")
    assert page.inner_text("#report-applications") == "1"
    assert "maria" in page.inner_text("#report-admins")
    assert axe_violations(page) == []
    screenshot(page, "van-day-report", docs=True)

    page.click("#nav-admins")
    page.fill("#username", "petro")
    page.fill("#password", "short")
    page.select_option("#role", "case_admin")
    page.click("#add-admin")
    assert "не коротшим" in page.inner_text("#password-error")
    assert page.input_value("#username") == "petro"
    assert axe_violations(page) == []
    page.fill("#password", "пароль-петра-1")
    page.click("#add-admin")
    assert page.locator("#admin-petro").count() == 1
    screenshot(page, "van-admins", docs=True)
    ctx.close()


def test_reset_password_and_first_login_change(browser: Any, hq_keys: HQKeys, tmp_path: Path, procs: list[Proc]) -> None:
    """Issue 16: a supervisor's reset shows a one-time password once; its first login lands on the change form (axe-checked)."""
    bundle = add_node(hq_keys, "van-01", tmp_path / "bundle", [AdminAccount("maria", PW, "supervisor"), AdminAccount("olena", PW, "van_admin")])
    port = free_port()
    procs.append(spawn(mobile_office_cmd("node", "--bundle", str(bundle.directory), "--data-dir", str(tmp_path / "node"),
                                         "--broker", f"mqtt://127.0.0.1:{free_port()}", "--gpsd", f"127.0.0.1:{free_port()}",
                                         "--http-host", "127.0.0.1", "--http-port", str(port)), tmp_path / "node.log"))
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(base + "/healthz"), 30, what="node")
    ctx = browser.new_context(viewport={"width": 1024, "height": 768}, locale="uk-UA")
    page = ctx.new_page()
    login(page, base, "maria", PW)
    page.click("#nav-admins")
    page.click("#reset-olena")
    notice = page.inner_text("[role=alert]")
    one_time = re.search(r"Одноразовий пароль для olena: (\S+?)\.", notice).group(1)  # type: ignore[union-attr]
    assert axe_violations(page) == []
    ctx.close()

    ctx = browser.new_context(viewport={"width": 1024, "height": 768}, locale="uk-UA")
    page = ctx.new_page()
    page.goto(base + "/login")
    page.fill("#username", "olena")
    page.fill("#password", one_time)
    page.click("#login-submit")
    page.wait_for_url(base + "/password")
    assert page.locator("#password-required").count() == 1
    page.goto(base + "/applications/new")  # anything else: the same form, 403
    assert page.locator("#password-required").count() == 1
    page.fill("#old_password", one_time)
    page.fill("#new_password", "password123")
    page.fill("#repeat", "password123")
    page.click("#change-password")
    assert "надто поширений" in page.inner_text("#new_password-error")
    assert axe_violations(page) == []
    screenshot(page, "van-password")
    page.fill("#old_password", one_time)
    page.fill("#new_password", "Олена-обрала-свій-2")
    page.fill("#repeat", "Олена-обрала-свій-2")
    page.click("#change-password")
    page.wait_for_url(base + "/")
    assert page.locator("#nav-password").count() == 1
    ctx.close()

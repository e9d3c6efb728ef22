"""Session fixation, brute force and lockout (injected clock), cookies, headers, inline scripts, secrets in logs."""

from __future__ import annotations

import logging
import re
from html.parser import HTMLParser

import pytest

from kit.ratelimit import LoginThrottle, ThrottleSettings
from sync.clock import ManualClock
from tests.conftest import ADMIN_PASSWORD
from tests.security.conftest import CASE_PASSWORD, Node, csrf_of, form_login, route_paths


async def test_login_issues_a_fresh_session_and_ends_the_one_the_browser_brought(node: Node) -> None:
    async with node.browser() as attacker:
        r = await attacker.post("/api/v1/login", json={"username": "olena", "password": CASE_PASSWORD})
        planted = r.cookies["mo_session"].value
    c = node.client
    c.session.cookie_jar.update_cookies({"mo_session": planted})
    assert (await c.get("/", allow_redirects=False)).status == 200  # the planted session is live
    r = await form_login(c)
    assert r.status == 303
    fresh = r.cookies["mo_session"].value
    assert fresh != planted
    async with node.browser() as attacker:
        attacker.cookie_jar.update_cookies({"mo_session": planted})
        assert (await attacker.get("/", allow_redirects=False)).status == 303  # the attacker's copy is dead
        assert (await attacker.get("/api/v1/status")).status == 200
    # An invented token is never adopted either.
    async with node.browser() as b:
        b.cookie_jar.update_cookies({"mo_session": "chosen-by-attacker"})
        r = await form_login(b)
        assert r.status == 303 and r.cookies["mo_session"].value != "chosen-by-attacker"


async def test_brute_force_locks_the_username_then_lets_in_after_the_lockout(node: Node) -> None:
    c = node.client
    for _ in range(5):
        r = await c.post("/api/v1/login", json={"username": "admin", "password": "вгадую"})
        assert r.status == 401
    r = await c.post("/api/v1/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status == 429  # even the right password: it is not checked while locked
    doc = await r.json()
    assert doc["error"]["code"] == "too_many_attempts" and doc["error"]["fields"] == {}
    assert "Спробуйте знову о" in doc["error"]["message"] and re.search(r"\d\d:\d\d", doc["error"]["message"])
    assert int(r.headers["Retry-After"]) == 300
    # The page login says the same, in the page.
    token = await csrf_of(c, "/login")
    r = await c.post("/login", data={"csrf": token, "username": "admin", "password": ADMIN_PASSWORD})
    assert r.status == 429 and "Спробуйте знову о" in await r.text()
    # Another account is not affected.
    assert (await c.post("/api/v1/login", json={"username": "olena", "password": CASE_PASSWORD})).status == 200
    node.clock.advance(299)
    assert (await c.post("/api/v1/login", json={"username": "admin", "password": ADMIN_PASSWORD})).status == 429
    node.clock.advance(2)
    assert (await c.post("/api/v1/login", json={"username": "admin", "password": ADMIN_PASSWORD})).status == 200
    # A second round of failures locks for twice as long.
    for _ in range(5):
        await c.post("/api/v1/login", json={"username": "admin", "password": "вгадую"})
    r = await c.post("/api/v1/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status == 429 and int(r.headers["Retry-After"]) == 600


async def test_brute_force_over_many_usernames_locks_the_address(node: Node) -> None:
    c = node.client
    for i in range(20):
        r = await c.post("/api/v1/login", json={"username": f"user{i}", "password": "x"})
        assert r.status == 401, i
    r = await c.post("/api/v1/login", json={"username": "olena", "password": CASE_PASSWORD})
    assert r.status == 429


def test_throttle_forgets_old_failures_and_bounds_memory() -> None:
    clock = ManualClock()
    t = LoginThrottle(clock, ThrottleSettings(max_per_user=3, max_per_address=1000, window=60))
    t.failed("a", "ip")
    t.failed("a", "ip")
    clock.advance(61)
    t.failed("a", "ip")
    assert t.retry_after("a", "ip") == 0  # the first two are outside the window
    t.failed("A ", "ip")
    t.failed("a", "ip")
    assert t.retry_after("a", "ip") == 300  # usernames compare case-insensitively
    for i in range(12_000):
        t.failed(f"spray{i}", f"10.0.{i // 250}.{i % 250}")
    assert len(t._entries) <= 10_000 + 2


async def test_cookies_and_security_headers(node: Node) -> None:
    c = node.client
    r = await c.get("/login")
    pre = r.headers.getall("Set-Cookie")
    assert any(h.startswith("mo_pre=") and "HttpOnly" in h and "SameSite=Strict" in h for h in pre), pre
    r = await form_login(c)
    cookie = next(h for h in r.headers.getall("Set-Cookie") if h.startswith("mo_session="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie  # plain http here; HTTPS: tests/security/test_https.py
    for path in ("/", "/applications/new", "/applicants", "/api/v1/status", "/login", "/nope"):
        r = await c.get(path)
        h = r.headers
        csp = h["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp, path
        assert h["X-Content-Type-Options"] == "nosniff" and h["X-Frame-Options"] == "DENY", path
        assert h["Referrer-Policy"] in ("same-origin", "no-referrer"), path
        assert h["Cache-Control"] == "no-store", path
    assert "no-store" not in (await c.get("/static/app.css")).headers.get("Cache-Control", "")


class _InlineScripts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script" and not a.get("src") and a.get("type") != "application/json":
            self.found.append("inline <script>")
        self.found += [f"<{tag} {k}=…>" for k in a if k.startswith("on")]
        if a.get("href", "") and str(a["href"]).lower().startswith("javascript:"):
            self.found.append(f"<{tag} href=javascript:…>")


async def test_no_page_has_inline_script_or_event_handlers(node: Node) -> None:
    """CSP forbids them; a page that used one would silently break, so none may exist."""
    c = node.client
    await form_login(c)
    pages = [p for m, p, dyn in route_paths(node.app, {"GET"}) if not dyn and not p.startswith(("/api/", "/healthz")) and "." not in p]
    assert "/applications/new" in pages
    for path in [*pages, "/login"]:
        r = await c.get(path)
        if "text/html" not in r.headers.get("Content-Type", ""):
            continue
        parser = _InlineScripts()
        parser.feed(await r.text())
        assert parser.found == [], (path, parser.found)


async def test_no_secret_in_the_logs(node: Node, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    c = node.client
    for _ in range(6):
        await c.post("/api/v1/login", json={"username": "olena", "password": "Секрет-невірний-77"})
    r = await form_login(c)
    session = r.cookies["mo_session"].value
    token = await csrf_of(c, "/")
    text = "\n".join(rec.getMessage() + str(rec.args) for rec in caplog.records)
    assert "login locked" in text  # the lockout is logged (so the log is captured at all)
    for secret in (ADMIN_PASSWORD, "Секрет-невірний-77", session, token):
        assert secret not in text
